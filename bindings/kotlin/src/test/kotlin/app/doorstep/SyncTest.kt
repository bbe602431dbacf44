package app.doorstep

import app.doorstep.ffi.ChangeOrigin
import app.doorstep.ffi.DoorstepException
import app.doorstep.ffi.HttpRequest
import app.doorstep.ffi.HttpResponse
import app.doorstep.ffi.HttpTransport
import app.doorstep.ffi.NewVisit
import app.doorstep.ffi.Replica
import app.doorstep.ffi.Role
import app.doorstep.ffi.SyncOptions
import app.doorstep.ffi.VisitMode
import app.doorstep.ffi.VisitUpdate
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir
import java.nio.file.Path
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.atomic.AtomicInteger

/**
 * `sync` against a real `doorstep-server` process started by each test on 127.0.0.1 (a port
 * chosen by the OS, a temporary data directory), set up through its admin API, and killed
 * after the test.
 */
class SyncTest {
    @TempDir
    lateinit var dir: Path

    /** Closed after each test, last first: replicas, then the server process (killed). */
    private val closing = mutableListOf<AutoCloseable>()

    private fun <T : AutoCloseable> T.closedAfter(): T = also { closing += it }

    @AfterEach
    fun closeAll() = closing.reversed().forEach { runCatching { it.close() } }

    /** One branch, one community, two members sharing one household, a device each. */
    private class District(
        val server: DoorstepServer,
        val household: String,
        val zhang: Pair<String, String>,
        val li: Pair<String, String>,
    )

    private fun district(): District {
        val server = DoorstepServer.start(dir).closedAfter()
        server.branch("b-3")
        server.community("c-pingzhou")
        server.member("m-zhang", "张老师", "b-3")
        server.member("m-li", "李老师", "b-3")
        val household = server.household("王", "c-pingzhou", "b-3", listOf("m-zhang", "m-li"))
        return District(server, household, server.device("m-zhang"), server.device("m-li"))
    }

    /** A phone through the idiomatic layer, with its enrolled device id. */
    private suspend fun phone(name: String, member: String, device: Pair<String, String>) =
        DoorstepReplica.open(dir.resolve("$name.sqlite3").toString(), member, device.first).closedAfter()

    private fun visit(household: String, notes: String) =
        NewVisit(householdId = household, startedAtMs = 1_750_000_000_000, mode = VisitMode.InPerson, notes = notes)

    /** The exception [block] throws, which must be an [E]. */
    private suspend inline fun <reified E : Throwable> thrownBy(block: () -> Unit): E {
        try {
            block()
        } catch (e: Throwable) {
            if (e is E) return e
            throw AssertionError("expected ${E::class.qualifiedName}, got $e", e)
        }
        throw AssertionError("expected ${E::class.qualifiedName}, nothing was thrown")
    }

    private val offline =
        "无法连接同步服务器，数据已保存在本机，稍后会自动重试 / cannot reach the sync server, your data is kept on this phone: "

    @Test
    fun `a phone receives its household, and a visit recorded offline reaches a second phone`() = runBlocking {
        val d = district()
        val zhang = phone("zhang", "m-zhang", d.zhang)
        val caller = Thread.currentThread()
        val appliedOn = CopyOnWriteArrayList<Thread>()
        zhang.subscribe { if (it.origin == ChangeOrigin.REMOTE) appliedOn += Thread.currentThread() }.closedAfter()

        val first = zhang.sync(d.server.url, d.zhang.second)
        assertEquals(listOf(d.household), first.householdsChanged, "$first")
        assertTrue(first.roundTrips >= 1u && first.bytesSent > 0u && first.bytesReceived > 0u, "$first")
        assertEquals(0u, first.accepted)
        val summary = zhang.listHouseholds().single()
        assertEquals("王", summary.familyName)
        assertEquals(setOf("m-zhang", "m-li"), summary.assignedMembers.toSet())
        assertTrue(appliedOn.isNotEmpty() && appliedOn.none { it == caller }, "applied off the caller's thread: $appliedOn")

        // Offline: a visit is recorded and waits on the phone.
        val visit = zhang.recordVisit(visit(d.household, "家长关心入学政策"))
        val pending = zhang.pendingChanges()
        assertTrue(pending.isNotEmpty())
        assertTrue(pending.all { it.householdId == d.household && it.quarantineReason == null }, "$pending")

        val second = zhang.sync(d.server.url, d.zhang.second)
        assertEquals(pending.size.toUInt(), second.accepted, "$second")
        assertEquals(0u, second.quarantined)
        assertEquals(0u, second.discarded)
        assertTrue(zhang.pendingChanges().isEmpty(), "acknowledged changes leave the outbox")

        // Another member's phone, through the generated API (Replica.sync is a suspend fun
        // that takes the transport).
        val li = Replica.open(dir.resolve("li.sqlite3").toString(), "m-li", d.li.first).closedAfter()
        val received = li.sync(d.server.url, d.li.second, HttpUrlConnectionTransport())
        assertEquals(listOf(d.household), received.householdsChanged, "$received")
        val seen = li.visits(d.household).single()
        assertEquals(visit.id, seen.id)
        assertEquals("家长关心入学政策", seen.notes)
        assertEquals(listOf("m-zhang"), seen.visitors)

        // Nothing new: one round trip that changes nothing.
        val idle = zhang.sync(d.server.url, d.zhang.second, SyncOptions(timeoutSeconds = 10u))
        assertEquals(1u, idle.roundTrips, "$idle")
        assertTrue(idle.householdsChanged.isEmpty() && idle.householdsRemoved.isEmpty(), "$idle")
        assertEquals(0u, idle.accepted)
    }

    @Test
    fun `once synced, a member's phone refuses an edit of another member's visit, and nothing waits`() = runBlocking {
        val d = district()
        val zhang = phone("zhang", "m-zhang", d.zhang)
        val li = phone("li", "m-li", d.li)
        assertEquals(null, li.role(), "the role is unknown before the first sync")
        zhang.sync(d.server.url, d.zhang.second)
        val visit = zhang.recordVisit(visit(d.household, "家长关心入学政策"))
        assertEquals(1u, zhang.sync(d.server.url, d.zhang.second).accepted)
        li.sync(d.server.url, d.li.second)
        assertEquals(Role.MEMBER, li.role())
        assertFalse(li.mayEditVisit(visit.id), "the app shows Zhang's visit read-only")

        val refused = thrownBy<DoorstepException.NotAllowed> {
            li.updateVisit(visit.id, VisitUpdate(notes = "李老师改写的记录"))
        }
        assertEquals("不能修改其他党员的走访记录 / cannot change visit ${visit.id}, recorded by another member", refused.message)
        assertEquals("家长关心入学政策", li.visits(d.household).single().notes, "nothing kept")
        assertTrue(li.pendingChanges().isEmpty(), "nothing waits for the server")

        // Li's own visit to the same household goes through at the next sync.
        val own = li.recordVisit(visit(d.household, "李老师回访"))
        assertTrue(li.mayEditVisit(own.id))
        val next = li.sync(d.server.url, d.li.second)
        assertEquals(0u, next.quarantined, "$next")
        assertTrue(next.accepted > 0u && li.pendingChanges().isEmpty(), "$next")
        zhang.sync(d.server.url, d.zhang.second)
        assertEquals(setOf("家长关心入学政策", "李老师回访"), zhang.visits(d.household).map { it.notes }.toSet())
        assertEquals(own.id, zhang.visits(d.household).single { it.notes == "李老师回访" }.id)
    }

    @Test
    fun `an unreachable server raises Network with a readable message, and nothing is lost`() = runBlocking {
        val d = district()
        val zhang = phone("zhang", "m-zhang", d.zhang)
        zhang.sync(d.server.url, d.zhang.second)
        val visit = zhang.recordVisit(visit(d.household, "电话回访"))
        val pending = zhang.pendingChanges()

        val port = closedLoopbackPort()
        val e = thrownBy<DoorstepException.Network> {
            zhang.sync("http://127.0.0.1:$port", d.zhang.second, SyncOptions(timeoutSeconds = 5u))
        }
        assertEquals(
            offline + "no connection / 无网络连接: http://127.0.0.1:$port/v1/sync: Connection refused",
            e.message,
        )
        assertEquals(pending, zhang.pendingChanges(), "the change is still pending")
        assertEquals(visit, zhang.visit(visit.id))

        // Back online: the next sync delivers it, and the other member receives it.
        assertEquals(pending.size.toUInt(), zhang.sync(d.server.url, d.zhang.second).accepted)
        assertTrue(zhang.pendingChanges().isEmpty())
        val li = phone("li", "m-li", d.li)
        li.sync(d.server.url, d.li.second)
        assertEquals(listOf(visit.id), li.visits(d.household).map { it.id })
    }

    @Test
    fun `a wrong token raises Server with the readable 401 message, and nothing is lost`() = runBlocking {
        val d = district()
        val zhang = phone("zhang", "m-zhang", d.zhang)
        zhang.sync(d.server.url, d.zhang.second)
        zhang.recordVisit(visit(d.household, "上门走访"))
        val pending = zhang.pendingChanges()

        val e = thrownBy<DoorstepException.Server> { zhang.sync(d.server.url, "not-a-device-token") }
        assertEquals(
            "同步服务器拒绝了请求（401）/ the sync server refused the request (401): " +
                "未登录或凭证无效 / missing, wrong or revoked token",
            e.message,
        )
        assertEquals(pending, zhang.pendingChanges())
        // Every variant is a DoorstepException: one catch covers sync failures.
        val any = thrownBy<DoorstepException> { zhang.sync(d.server.url, "") }
        assertTrue(any is DoorstepException.Server, "$any")

        val bad = thrownBy<DoorstepException.InvalidInput> {
            zhang.sync(d.server.url, d.zhang.second, SyncOptions(timeoutSeconds = 0u))
        }
        assertTrue(bad.message!!.contains("timeout_seconds must be at least 1"), bad.message)

        assertEquals(pending.size.toUInt(), zhang.sync(d.server.url, d.zhang.second).accepted)
        assertTrue(zhang.pendingChanges().isEmpty())
    }

    @Test
    fun `a transport that throws raises Network with its message, and nothing is lost`() = runBlocking {
        val d = district()
        val zhang = phone("zhang", "m-zhang", d.zhang)
        zhang.sync(d.server.url, d.zhang.second)
        val visit = zhang.recordVisit(visit(d.household, "电话回访"))
        val pending = zhang.pendingChanges()

        // An app's own transport that fails with an ordinary exception (not a TransportException).
        val calls = AtomicInteger()
        val failing = object : HttpTransport {
            override suspend fun post(request: HttpRequest): HttpResponse {
                calls.incrementAndGet()
                assertEquals(d.server.url + "/v1/sync", request.url)
                assertTrue(request.headers.any { it.name == "Authorization" && it.value == "Bearer ${d.zhang.second}" })
                assertEquals(10_000uL, request.timeoutMs)
                assertFalse(request.body.isEmpty())
                throw IllegalStateException("proxy authentication required / 代理需要登录")
            }
        }
        val e = thrownBy<DoorstepException.Network> {
            zhang.ffi.sync(d.server.url, d.zhang.second, failing, SyncOptions(timeoutSeconds = 10u))
        }
        assertEquals(offline + "java.lang.IllegalStateException: proxy authentication required / 代理需要登录", e.message)
        assertEquals(1, calls.get())
        assertEquals(pending, zhang.pendingChanges(), "the change is still pending")
        assertEquals(visit, zhang.visit(visit.id))

        // The same app, with a transport that works: everything is delivered.
        val withDefault = DoorstepReplica(zhang.ffi)
        assertEquals(pending.size.toUInt(), withDefault.sync(d.server.url, d.zhang.second).accepted)
        assertTrue(zhang.pendingChanges().isEmpty())
    }

    @Test
    fun `the replica stays usable while a sync waits for the server, and a cancelled sync stops`() = runBlocking {
        // A server that accepts the request and never answers keeps the sync in flight.
        val stalled = StalledServer().closedAfter()
        val replica = DoorstepReplica.open(dir.resolve("k.sqlite3").toString(), "m-zhang", "d-k").closedAfter()
        val h = replica.createHousehold(newHousehold())

        val sync = async(Dispatchers.Default) {
            runCatching { replica.sync(stalled.url, "token", SyncOptions(timeoutSeconds = 6u)) }
        }
        withContext(Dispatchers.IO) { stalled.nextConnection() } // the request is on the wire
        // What a UI does meanwhile: list, record, read the outbox. None of it waits for the sync.
        val started = System.nanoTime()
        assertEquals(listOf(h.id), replica.listHouseholds().map { it.id })
        val v = replica.recordVisit(visit(h.id, "同步时记录"))
        val pending = replica.pendingChanges()
        val tookMs = (System.nanoTime() - started) / 1_000_000
        assertTrue(sync.isActive, "the sync was still waiting for the server while the replica answered ($tookMs ms)")
        assertEquals(setOf(h.id), pending.map { it.householdId }.toSet())

        val timedOut = thrownBy<DoorstepException.Network> { sync.await().getOrThrow() }
        assertEquals(offline + "timed out / 超时", timedOut.message)
        assertEquals(pending, replica.pendingChanges(), "nothing lost")
        assertEquals(v, replica.visit(v.id))

        // Cancelling the coroutine stops the native sync too: the server sees the connection
        // closed at once, not after the 60 s default timeout.
        val cancelled = launch(Dispatchers.Default) { replica.sync(stalled.url, "token") }
        val connection = withContext(Dispatchers.IO) { stalled.nextConnection() }
        cancelled.cancel()
        withTimeout(5_000) { cancelled.join() }
        withContext(Dispatchers.IO) {
            connection.soTimeout = 10_000 // a SocketTimeoutException here fails the test
            val input = connection.getInputStream()
            while (input.read() != -1) Unit
        }
        assertEquals(pending, replica.pendingChanges())
        assertEquals(1u, replica.listHouseholds().single().visitCount)
    }
}
