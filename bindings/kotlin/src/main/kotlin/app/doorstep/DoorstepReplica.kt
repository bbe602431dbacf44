package app.doorstep

import app.doorstep.ffi.ChangeEvent
import app.doorstep.ffi.ChangeListener
import app.doorstep.ffi.CommunityOverview
import app.doorstep.ffi.Conflict
import app.doorstep.ffi.DoorstepException
import app.doorstep.ffi.GuardianUpdate
import app.doorstep.ffi.HistoryEntry
import app.doorstep.ffi.Household
import app.doorstep.ffi.HouseholdChanges
import app.doorstep.ffi.HouseholdHeads
import app.doorstep.ffi.HouseholdSummary
import app.doorstep.ffi.HouseholdUpdate
import app.doorstep.ffi.HttpTransport
import app.doorstep.ffi.ImportReport
import app.doorstep.ffi.Issue
import app.doorstep.ffi.IssueStatus
import app.doorstep.ffi.IssueSummary
import app.doorstep.ffi.IssueUpdate
import app.doorstep.ffi.NewGuardian
import app.doorstep.ffi.NewHousehold
import app.doorstep.ffi.NewIssue
import app.doorstep.ffi.NewStudent
import app.doorstep.ffi.NewVisit
import app.doorstep.ffi.PendingChange
import app.doorstep.ffi.Replica
import app.doorstep.ffi.Role
import app.doorstep.ffi.SubscriptionHandle
import app.doorstep.ffi.SyncOptions
import app.doorstep.ffi.SyncReport
import app.doorstep.ffi.Visit
import app.doorstep.ffi.VisitUpdate
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.withContext

/**
 * The member's offline replica for Kotlin callers: every call is a `suspend` function that
 * runs the blocking native call on [io] (by default [Dispatchers.IO]), so the UI thread never
 * waits for SQLite. [sync] is native-async: it suspends while the library's own thread
 * syncs, posting each request through [transport] (by default [HttpUrlConnectionTransport]
 * on [io]; pass your own, e.g. over OkHttp, to share the app's HTTP client), and the other
 * functions stay usable meanwhile. Failures throw [DoorstepException] subclasses (`NotFound`,
 * `InvalidInput`, `NotAllowed`, `InvalidTransition`, `CorruptHousehold`, `Network`, `Server`,
 * `Storage`) whose `message` is the core's bilingual text, e.g. `未找到住户：h-1 / household not found: h-1`.
 *
 * The generated [Replica] stays reachable as [ffi] for anything not wrapped here. One
 * instance may be shared by the whole app and used from several coroutines at once.
 */
class DoorstepReplica(
    val ffi: Replica,
    private val io: CoroutineDispatcher = Dispatchers.IO,
    val transport: HttpTransport = HttpUrlConnectionTransport(io),
) : AutoCloseable {

    companion object {
        /** Open (or create) the replica file at [path] for a member on a device. */
        suspend fun open(
            path: String,
            memberId: String,
            deviceId: String,
            io: CoroutineDispatcher = Dispatchers.IO,
            transport: HttpTransport = HttpUrlConnectionTransport(io),
        ): DoorstepReplica = withContext(io) { DoorstepReplica(Replica.open(path, memberId, deviceId), io, transport) }
    }

    private suspend inline fun <T> call(crossinline block: Replica.() -> T): T = withContext(io) { ffi.block() }

    suspend fun memberId(): String = call { memberId() }
    suspend fun deviceId(): String = call { deviceId() }
    suspend fun role(): Role? = call { role() }
    /** Once after this file was restored from a backup, before any edit (see the core's docs). */
    suspend fun restoredFromBackup() = call { restoredFromBackup() }

    // ----- households -----
    suspend fun createHousehold(household: NewHousehold): Household = call { createHousehold(household) }
    suspend fun listHouseholds(): List<HouseholdSummary> = call { listHouseholds() }
    suspend fun household(householdId: String): Household = call { household(householdId) }
    suspend fun updateHousehold(householdId: String, update: HouseholdUpdate): Household =
        call { updateHousehold(householdId, update) }
    suspend fun addGuardian(householdId: String, guardian: NewGuardian): Household =
        call { addGuardian(householdId, guardian) }
    suspend fun updateGuardian(householdId: String, guardianId: String, update: GuardianUpdate): Household =
        call { updateGuardian(householdId, guardianId, update) }
    suspend fun addStudent(householdId: String, student: NewStudent): Household =
        call { addStudent(householdId, student) }
    suspend fun setMemberAssigned(householdId: String, memberId: String, assigned: Boolean): Household =
        call { setMemberAssigned(householdId, memberId, assigned) }

    // ----- visits -----
    suspend fun recordVisit(visit: NewVisit): Visit = call { recordVisit(visit) }
    suspend fun visits(householdId: String): List<Visit> = call { visits(householdId) }
    suspend fun visit(visitId: String): Visit = call { visit(visitId) }
    suspend fun mayEditVisit(visitId: String): Boolean = call { mayEditVisit(visitId) }
    suspend fun updateVisit(visitId: String, update: VisitUpdate): Visit = call { updateVisit(visitId, update) }
    suspend fun deleteVisit(visitId: String): Visit = call { deleteVisit(visitId) }
    suspend fun restoreVisit(visitId: String): Visit = call { restoreVisit(visitId) }

    // ----- issues -----
    suspend fun raiseIssue(issue: NewIssue): Issue = call { raiseIssue(issue) }
    suspend fun issue(issueId: String): Issue = call { issue(issueId) }
    suspend fun issues(householdId: String): List<Issue> = call { issues(householdId) }
    suspend fun updateIssue(issueId: String, update: IssueUpdate): Issue = call { updateIssue(issueId, update) }
    suspend fun transitionIssue(issueId: String, to: IssueStatus, reason: String): Issue =
        call { transitionIssue(issueId, to, reason) }
    suspend fun commentOnIssue(issueId: String, text: String): Issue = call { commentOnIssue(issueId, text) }
    suspend fun deleteIssue(issueId: String): Issue = call { deleteIssue(issueId) }
    suspend fun restoreIssue(issueId: String): Issue = call { restoreIssue(issueId) }
    suspend fun openIssues(): List<IssueSummary> = call { openIssues() }
    suspend fun overdueIssues(today: String): List<IssueSummary> = call { overdueIssues(today) }
    suspend fun overview(today: String): List<CommunityOverview> = call { overview(today) }

    // ----- conflicts and history -----
    suspend fun conflicts(householdId: String? = null): List<Conflict> = call { conflicts(householdId) }
    suspend fun resolveConflict(householdId: String, path: String, chosenValue: String) =
        call { resolveConflict(householdId, path, chosenValue) }
    suspend fun history(householdId: String): List<HistoryEntry> = call { history(householdId) }
    suspend fun householdJson(householdId: String): String = call { householdJson(householdId) }

    // ----- exchange with peers -----
    suspend fun heads(): List<HouseholdHeads> = call { heads() }
    suspend fun exportChanges(peerHeads: List<HouseholdHeads>): List<HouseholdChanges> =
        call { exportChanges(peerHeads) }
    suspend fun importChanges(changes: List<HouseholdChanges>): ImportReport = call { importChanges(changes) }

    // ----- sync with the server -----

    /**
     * Sync with the server at [serverUrl] using the device token the phone received at
     * enrolment: hand over what was recorded here, receive what changed for this member's
     * households. Safe to call from any dispatcher, the main one included: the SQLite work
     * runs on the library's sync thread and the HTTP exchange in [transport] (on [io] for
     * the default one), not on the caller's thread, and the coroutine suspends meanwhile.
     * Other calls (list screens, new visits) run normally while a sync is in progress.
     *
     * Throws [DoorstepException.Network] (offline, timeout: [SyncOptions.timeoutSeconds], or
     * the transport threw) or [DoorstepException.Server] (e.g. 401 for a wrong or revoked
     * token), with a readable `message`; nothing is lost, [pendingChanges] still lists what
     * was not delivered. Cancelling the coroutine stops the sync at its next network wait and
     * aborts the request in flight, also without loss.
     */
    suspend fun sync(serverUrl: String, deviceToken: String, options: SyncOptions = SyncOptions()): SyncReport =
        ffi.sync(serverUrl, deviceToken, transport, options) // already a suspend function that does not block

    /** Local changes the server has not acknowledged yet, with quarantine reasons. */
    suspend fun pendingChanges(): List<PendingChange> = call { pendingChanges() }

    // ----- notifications -----

    /**
     * Every committed change (local edits and imports) while the flow is collected.
     * Collecting subscribes; cancelling the collector cancels the subscription. Events are
     * buffered without limit, so a slow collector never blocks the thread that wrote.
     */
    fun changes(): Flow<ChangeEvent> = callbackFlow {
        val handle = ffi.subscribe(object : ChangeListener {
            override fun onChange(event: ChangeEvent) {
                trySend(event)
            }
        })
        awaitClose {
            handle.cancel()
            handle.close()
        }
    }.buffer(Channel.UNLIMITED)

    /**
     * Call [onChange] for every committed change until the returned handle is cancelled or
     * closed. [onChange] runs on the thread that made the change: keep it short.
     *
     * Keep the handle for as long as [onChange] should be called: a handle nobody holds
     * is garbage-collected, and that closes it, at a moment nobody chose. A screen that
     * only needs changes while it collects uses [changes] instead.
     */
    fun subscribe(onChange: (ChangeEvent) -> Unit): SubscriptionHandle =
        ffi.subscribe(object : ChangeListener {
            override fun onChange(event: ChangeEvent) = onChange(event)
        })

    /** Release the native replica once no call is running (the file is closed then). */
    override fun close() = ffi.close()
}
