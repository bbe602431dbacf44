package app.doorstep

import app.doorstep.ffi.ChangeEvent
import app.doorstep.ffi.ChangeListener
import app.doorstep.ffi.ChangeOrigin
import app.doorstep.ffi.DoorstepException
import app.doorstep.ffi.GuardianUpdate
import app.doorstep.ffi.HouseholdChanges
import app.doorstep.ffi.HouseholdUpdate
import app.doorstep.ffi.HukouStatus
import app.doorstep.ffi.IssueCategory
import app.doorstep.ffi.IssueStatus
import app.doorstep.ffi.Location
import app.doorstep.ffi.NewIssue
import app.doorstep.ffi.NewVisit
import app.doorstep.ffi.Replica
import app.doorstep.ffi.Urgency
import app.doorstep.ffi.VisitMode
import app.doorstep.ffi.VisitTopic
import app.doorstep.ffi.issueCanMove
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNotNull
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir
import java.nio.file.Path
import java.util.Collections
import java.util.concurrent.CopyOnWriteArrayList

/** The generated API and the idiomatic layer against the real libdoorstep_bindings. */
class ReplicaTest {
    @TempDir
    lateinit var dir: Path

    private val opened = mutableListOf<AutoCloseable>()

    private fun replica(name: String = "phone", member: String = "m-zhang", device: String = "d-$name"): Replica =
        Replica.open(dir.resolve("$name.sqlite3").toString(), member, device).also { opened += it }

    @AfterEach
    fun closeAll() = opened.reversed().forEach { it.close() }

    /** What a sync does, by hand: each side sends what the other lacks. */
    private fun exchange(a: Replica, b: Replica) {
        b.importChanges(a.exportChanges(b.heads()))
        a.importChanges(b.exportChanges(a.heads()))
    }

    @Test
    fun `open a replica, create a household and record a visit`() {
        val r = replica()
        assertEquals("m-zhang", r.memberId())
        val h = r.createHousehold(newHousehold())
        assertEquals("王", h.familyName)
        assertEquals("母亲", h.guardians.single().relation)
        assertEquals(HukouStatus.NonLocal, h.students.single().hukouStatus)

        val v = r.recordVisit(
            NewVisit(
                householdId = h.id,
                startedAtMs = 1_750_000_000_000,
                mode = VisitMode.InPerson,
                peopleMet = listOf("母亲 李芳", "学生 王小明"),
                topics = listOf(VisitTopic.EnrolmentPolicy, VisitTopic.Other("summer_camp")),
                notes = "家长关心入学政策",
                location = Location(latitude = 23.03, longitude = 113.12),
            ),
        )
        assertEquals(listOf("m-zhang"), v.visitors, "the recording member is added")
        assertEquals(listOf(VisitTopic.EnrolmentPolicy, VisitTopic.Other("summer_camp")), v.topics)
        assertEquals(23.03, v.location!!.latitude)
        assertNull(v.deleted)
        assertEquals(v, r.visit(v.id))
        assertEquals(listOf(v), r.visits(h.id))

        val summary = r.listHouseholds().single()
        assertEquals(1u, summary.visitCount)
        assertEquals(1_750_000_000_000, summary.lastVisitAtMs)

        // Deleting is soft; restoring brings it back.
        assertNotNull(r.deleteVisit(v.id).deleted)
        assertNull(r.restoreVisit(v.id).deleted)

        // The file is durable: a second open sees the same records.
        r.close(); opened.remove(r)
        val again = replica()
        assertEquals("家长关心入学政策", again.visit(v.id).notes)
        assertTrue(again.history(h.id).size >= 4)
    }

    @Test
    fun `raise an issue and move it through its lifecycle`() {
        val r = replica()
        val h = r.createHousehold(newHousehold())
        val issue = r.raiseIssue(
            NewIssue(
                householdId = h.id,
                category = IssueCategory.Enrolment,
                title = "随迁子女入学材料",
                urgency = Urgency.High,
                dueOn = "2025-07-01",
            ),
        )
        assertEquals(IssueStatus.Open, issue.status)
        assertEquals(1u, r.listHouseholds().single().openIssueCount)
        assertEquals(listOf(issue.id), r.overdueIssues("2025-07-02").map { it.id })

        assertEquals(IssueStatus.Acknowledged, r.transitionIssue(issue.id, IssueStatus.Acknowledged, "已受理").status)
        assertEquals(IssueStatus.InProgress, r.transitionIssue(issue.id, IssueStatus.InProgress, "联系学校").status)
        r.commentOnIssue(issue.id, "学校答复下周补录")
        val resolved = r.transitionIssue(issue.id, IssueStatus.Resolved, "已补录")
        assertEquals(IssueStatus.Resolved, resolved.status)
        assertEquals(3, resolved.transitions.size)
        assertEquals(IssueStatus.InProgress, resolved.transitions.last().from)
        assertEquals("学校答复下周补录", resolved.comments.single().text)
        assertTrue(r.openIssues().isEmpty())
        assertEquals(IssueStatus.Closed, r.transitionIssue(issue.id, IssueStatus.Closed, "家长满意").status)

        val overview = r.overview("2025-07-02").single()
        assertEquals("c-pingzhou", overview.communityId)
        assertEquals(0u, overview.openIssues)
        assertEquals(1u, overview.issuesByStatus.single { it.status == IssueStatus.Closed }.count)

        assertTrue(issueCanMove(IssueStatus.Closed, IssueStatus.Open))
        assertFalse(issueCanMove(IssueStatus.Open, IssueStatus.Closed))
    }

    @Test
    fun `an invalid transition raises InvalidTransition with the bilingual message`() {
        val r = replica()
        val h = r.createHousehold(newHousehold())
        val issue = r.raiseIssue(NewIssue(h.id, IssueCategory.Hardship, "家庭困难", Urgency.Normal))
        val e = assertThrows<DoorstepException.InvalidTransition> {
            r.transitionIssue(issue.id, IssueStatus.Closed, "直接关闭")
        }
        assertEquals("问题状态不能从“open”改为“closed” / an issue cannot move from open to closed", e.message)
        // Nothing changed.
        assertEquals(IssueStatus.Open, r.issue(issue.id).status)
    }

    @Test
    fun `unknown ids raise NotFound with the bilingual message`() {
        val r = replica()
        val e = assertThrows<DoorstepException.NotFound> { r.household("h-nope") }
        assertEquals("未找到住户：h-nope / household not found: h-nope", e.message)

        val visit = assertThrows<DoorstepException.NotFound> {
            r.recordVisit(NewVisit("h-nope", 1_750_000_000_000, VisitMode.Phone))
        }
        assertTrue(visit.message!!.contains("household not found: h-nope"), visit.message)
        val issue = assertThrows<DoorstepException.NotFound> { r.issue("i-nope") }
        assertTrue(issue.message!!.startsWith("未找到问题"), issue.message)
        // Every variant is a DoorstepException, so one catch covers them all.
        val any: DoorstepException = assertThrows<DoorstepException> { r.visit("v-nope") }
        assertTrue(any is DoorstepException.NotFound)
    }

    @Test
    fun `bad input raises InvalidInput with a readable message`() {
        val e = assertThrows<DoorstepException.InvalidInput> {
            Replica.open(dir.resolve("x.sqlite3").toString(), " ", "d-1")
        }
        assertTrue(e.message!!.contains("member id and device id must not be empty"), e.message)
        assertTrue(e.message!!.contains("党员编号和设备编号不能为空"), e.message)

        val r = replica()
        val date = assertThrows<DoorstepException.InvalidInput> { r.overdueIssues("next tuesday") }
        assertTrue(date.message!!.startsWith("输入无效："), date.message)

        val garbage = assertThrows<DoorstepException.InvalidInput> {
            r.importChanges(listOf(HouseholdChanges("h-1", listOf(byteArrayOf(1, 2, 3)))))
        }
        assertTrue(garbage.message!!.contains("cannot be decoded"), garbage.message)
        assertTrue(r.listHouseholds().isEmpty())
    }

    @Test
    fun `a file belongs to one member`() {
        replica("shared", member = "m-zhang").let { it.close(); opened.remove(it) }
        val e = assertThrows<DoorstepException.InvalidInput> { replica("shared", member = "m-li") }
        assertTrue(e.message!!.contains("belongs to member_id"), e.message)
    }

    @Test
    fun `concurrent edits on two replicas produce a conflict that can be resolved`() {
        val a = replica("a", member = "m-zhang")
        val b = replica("b", member = "m-li")
        val h = a.createHousehold(newHousehold())
        val report = b.importChanges(a.exportChanges(b.heads()))
        assertEquals(listOf(h.id), report.householdsChanged)
        assertEquals(0u, report.changesWaiting)
        val guardian = b.household(h.id).guardians.single().id

        // Both phones change the mother's number while offline.
        a.updateGuardian(h.id, guardian, GuardianUpdate(phone = "13911111111"))
        b.updateGuardian(h.id, guardian, GuardianUpdate(phone = "13722222222"))
        // And a non-conflicting edit merges cleanly.
        b.updateHousehold(h.id, HouseholdUpdate(address = "平洲路 2 号"))
        exchange(a, b)

        assertEquals(a.heads().toSet(), b.heads().toSet())
        val conflict = a.conflicts(h.id).single()
        assertEquals(conflict, b.conflicts(null).single())
        assertEquals("household/guardians/$guardian/phone", conflict.path)
        assertEquals(setOf("13911111111", "13722222222"), conflict.values.map { it.value }.toSet())
        assertEquals(setOf("m-zhang", "m-li"), conflict.values.map { it.by.memberId }.toSet())
        val shown = a.household(h.id).guardians.single().phone
        assertEquals(conflict.values[0].value, shown, "the shown value comes first")
        assertEquals("平洲路 2 号", a.household(h.id).address)

        // A value nobody typed is refused.
        assertThrows<DoorstepException.InvalidInput> { b.resolveConflict(h.id, conflict.path, "10000") }

        val loser = conflict.values[1].value
        b.resolveConflict(h.id, conflict.path, loser)
        exchange(a, b)
        for (r in listOf(a, b)) {
            assertEquals(loser, r.household(h.id).guardians.single().phone)
            assertTrue(r.conflicts(null).isEmpty())
        }
        assertThrows<DoorstepException.NotFound> { a.resolveConflict(h.id, conflict.path, loser) }
    }

    @Test
    fun `a listener hears local and remote changes until cancelled`() {
        val a = replica("a")
        val b = replica("b", member = "m-li")
        val events = CopyOnWriteArrayList<ChangeEvent>()
        val handle = a.subscribe(object : ChangeListener {
            override fun onChange(event: ChangeEvent) {
                events += event
            }
        })
        assertTrue(handle.isActive())

        val h = a.createHousehold(newHousehold())
        assertEquals(listOf(ChangeEvent(listOf(h.id), ChangeOrigin.LOCAL)), events.toList())

        b.importChanges(a.exportChanges(b.heads()))
        b.updateHousehold(h.id, HouseholdUpdate(notes = "周末在家"))
        a.importChanges(b.exportChanges(a.heads()))
        assertEquals(ChangeEvent(listOf(h.id), ChangeOrigin.REMOTE), events.last())
        assertEquals(2, events.size)

        handle.cancel()
        assertFalse(handle.isActive())
        a.updateHousehold(h.id, HouseholdUpdate(notes = "周末不在家"))
        assertEquals(2, events.size, "no event after cancel")
        handle.cancel() // idempotent
        handle.close()
    }

    @Test
    fun `closing the handle stops notifications and a failing listener does not fail the write`() {
        val r = replica()
        val heard = Collections.synchronizedList(mutableListOf<String>())
        val failing = r.subscribe(object : ChangeListener {
            override fun onChange(event: ChangeEvent) = throw IllegalStateException("listener bug")
        })
        val handle = r.subscribe(object : ChangeListener {
            override fun onChange(event: ChangeEvent) {
                heard += event.householdIds
            }
        })
        val h = r.createHousehold(newHousehold()) // does not throw despite the failing listener
        assertEquals(listOf(h.id), heard.toList())
        handle.close()
        failing.close()
        r.updateHousehold(h.id, HouseholdUpdate(archived = true))
        assertEquals(1, heard.size)
        assertTrue(r.household(h.id).archived)
    }

    @Test
    fun `unknown enum values survive the round trip`() {
        val r = replica()
        val h = r.createHousehold(newHousehold())
        val v = r.recordVisit(NewVisit(h.id, 1_750_000_000_000, VisitMode.Other("bicycle_ride")))
        assertEquals(VisitMode.Other("bicycle_ride"), r.visit(v.id).mode)
        // A known text passed as Other comes back as its variant.
        val w = r.recordVisit(NewVisit(h.id, 1_750_000_000_001, VisitMode.Other("phone")))
        assertEquals(VisitMode.Phone, w.mode)
    }

    @Test
    fun `the idiomatic layer runs calls off the caller thread and streams changes as a Flow`() = runBlocking {
        val replica = DoorstepReplica.open(dir.resolve("k.sqlite3").toString(), "m-zhang", "d-k")
        opened += replica
        val caller = Thread.currentThread()
        // Unconfined: the collector subscribes before async() returns.
        val firstTwo = async(Dispatchers.Unconfined) { replica.changes().take(2).toList() }
        // Listeners run on the thread that wrote: it shows where the native call ran.
        val writers = CopyOnWriteArrayList<Thread>()
        val handle = replica.subscribe { writers += Thread.currentThread() }

        val h = replica.createHousehold(newHousehold())
        val v = replica.recordVisit(NewVisit(h.id, 1_750_000_000_000, VisitMode.WeChat))
        val events = withTimeout(5_000) { firstTwo.await() }
        assertEquals(listOf(h.id, h.id), events.map { it.householdIds.single() })
        assertTrue(events.all { it.origin == ChangeOrigin.LOCAL })
        assertEquals(2, writers.size)
        assertTrue(writers.none { it == caller }, "native calls ran on Dispatchers.IO, not the caller: $writers")
        assertEquals(caller, Thread.currentThread(), "the coroutine resumes on its own thread")
        handle.close()

        assertEquals(VisitMode.WeChat, replica.visit(v.id).mode)
        val e = assertThrows<DoorstepException.NotFound> { runBlocking { replica.issue("i-nope") } }
        assertTrue(e.message!!.contains("issue not found: i-nope"), e.message)
    }

    @Test
    fun `one replica is safe to use from many threads at once`() = runBlocking {
        val replica = DoorstepReplica.open(dir.resolve("t.sqlite3").toString(), "m-zhang", "d-t")
        opened += replica
        val households = (1..4).map { replica.createHousehold(newHousehold("户$it")) }
        val live = launch(Dispatchers.Default) { replica.changes().first() }
        val jobs = households.flatMap { h ->
            (1..10).map { i ->
                async(Dispatchers.IO) {
                    replica.recordVisit(NewVisit(h.id, 1_750_000_000_000 + i, VisitMode.InPerson))
                    replica.listHouseholds() // a "UI" read between writes
                }
            }
        }
        jobs.awaitAll()
        withTimeout(5_000) { live.join() }
        assertEquals(List(4) { 10u }, replica.listHouseholds().map { it.visitCount })
    }
}
