"""`Replica.sync` (an `async def` in Python) against a real doorstep-server process started
for each test on 127.0.0.1 and killed after it (fixtures in conftest.py), posting through
the `http.client` transport of http_transport.py."""

import asyncio
import threading
import time

import pytest

import doorstep
from doorstep import ChangeOrigin, DoorstepError, NewVisit, SyncOptions, VisitMode
from http_transport import HttpClientTransport
from live_server import StalledServer, closed_loopback_port

OFFLINE = "无法连接同步服务器，数据已保存在本机，稍后会自动重试 / cannot reach the sync server, your data is kept on this phone: "


def visit(household, notes):
    return NewVisit(household_id=household, started_at_ms=1_750_000_000_000, mode=VisitMode.IN_PERSON(), notes=notes)


TRANSPORT = HttpClientTransport()


async def sync_async(replica, url, token, transport=TRANSPORT, **options):
    """`replica.sync` on the running loop, which UniFFI is told to run the transport on."""
    doorstep.uniffi_set_event_loop(asyncio.get_running_loop())
    if options:
        return await replica.sync(url, token, transport, SyncOptions(**options))
    return await replica.sync(url, token, transport)


def sync(replica, url, token, transport=TRANSPORT, **options):
    """Run one sync to completion from synchronous test code."""
    return asyncio.run(sync_async(replica, url, token, transport, **options))


class RemoteThreads(doorstep.ChangeListener):
    def __init__(self):
        self.threads = []

    def on_change(self, event):
        if event.origin == ChangeOrigin.REMOTE:
            self.threads.append(threading.current_thread())


def test_phone_receives_household_and_a_visit_reaches_a_second_phone(district, open_replica):
    d = district
    zhang = open_replica("zhang", member="m-zhang", device=d.zhang[0])
    remote = RemoteThreads()
    handle = zhang.subscribe(remote)

    first = sync(zhang, d.server.url, d.zhang[1])
    assert first.households_changed == [d.household]
    assert first.round_trips >= 1 and first.bytes_sent > 0 and first.bytes_received > 0
    assert first.accepted == 0
    (summary,) = zhang.list_households()
    assert summary.family_name == "王"
    assert set(summary.assigned_members) == {"m-zhang", "m-li"}
    assert remote.threads and threading.current_thread() not in remote.threads, "applied off the caller's thread"
    handle.cancel()

    v = zhang.record_visit(visit(d.household, "家长关心入学政策"))
    pending = zhang.pending_changes()
    assert pending
    assert all(p.household_id == d.household and p.quarantine_reason is None for p in pending)

    second = sync(zhang, d.server.url, d.zhang[1])
    assert second.accepted == len(pending)
    assert (second.quarantined, second.discarded) == (0, 0)
    assert zhang.pending_changes() == []

    li = open_replica("li", member="m-li", device=d.li[0])
    received = sync(li, d.server.url, d.li[1])
    assert received.households_changed == [d.household]
    (seen,) = li.visits(d.household)
    assert (seen.id, seen.notes, seen.visitors) == (v.id, "家长关心入学政策", ["m-zhang"])

    idle = sync(zhang, d.server.url, d.zhang[1], timeout_seconds=10)
    assert idle.round_trips == 1
    assert idle.households_changed == [] and idle.households_removed == [] and idle.accepted == 0


def test_once_synced_a_members_phone_refuses_an_edit_of_another_members_visit(district, open_replica):
    d = district
    zhang = open_replica("zhang", member="m-zhang", device=d.zhang[0])
    li = open_replica("li", member="m-li", device=d.li[0])
    assert li.role() is None, "unknown before the first sync"
    sync(zhang, d.server.url, d.zhang[1])
    v = zhang.record_visit(visit(d.household, "家长关心入学政策"))
    assert sync(zhang, d.server.url, d.zhang[1]).accepted == 1
    sync(li, d.server.url, d.li[1])
    assert li.role() == doorstep.Role.MEMBER
    assert not li.may_edit_visit(v.id), "the app shows Zhang's visit read-only"

    with pytest.raises(DoorstepError.NotAllowed) as caught:
        li.update_visit(v.id, doorstep.VisitUpdate(notes="李老师改写的记录"))
    assert str(caught.value) == f"不能修改其他党员的走访记录 / cannot change visit {v.id}, recorded by another member"
    assert [x.notes for x in li.visits(d.household)] == ["家长关心入学政策"]
    assert li.pending_changes() == [], "nothing waits for the server"


def test_a_replica_restored_from_its_backup_and_told_so_syncs_what_both_lives_recorded(district, open_replica, tmp_path):
    d = district
    url, token = d.server.url, d.zhang[1]
    zhang = open_replica("zhang", member="m-zhang", device=d.zhang[0])
    sync(zhang, url, token)
    before = zhang.record_visit(visit(d.household, "备份之前")).id
    assert sync(zhang, url, token).accepted == 1
    del zhang  # closes the file: the backup is a copy of it alone
    file, backup = tmp_path / "zhang.sqlite3", tmp_path / "backup.sqlite3"
    backup.write_bytes(file.read_bytes())

    zhang = open_replica("zhang", member="m-zhang", device=d.zhang[0])
    after = zhang.record_visit(visit(d.household, "备份之后")).id
    assert sync(zhang, url, token).accepted == 1
    del zhang
    for leftover in ("zhang.sqlite3-wal", "zhang.sqlite3-shm"):
        (tmp_path / leftover).unlink(missing_ok=True)
    file.write_bytes(backup.read_bytes())

    zhang = open_replica("zhang", member="m-zhang", device=d.zhang[0])
    zhang.restored_from_backup()
    restored = zhang.record_visit(visit(d.household, "恢复之后，同步之前")).id
    report = sync(zhang, url, token)
    assert (report.accepted, report.quarantined) == (1, 0)
    assert sorted(v.id for v in zhang.visits(d.household)) == sorted([before, after, restored])
    assert zhang.pending_changes() == []


def test_unreachable_server_raises_network_and_loses_nothing(district, open_replica):
    d = district
    zhang = open_replica("zhang", member="m-zhang", device=d.zhang[0])
    sync(zhang, d.server.url, d.zhang[1])
    v = zhang.record_visit(visit(d.household, "电话回访"))
    pending = zhang.pending_changes()

    port = closed_loopback_port()
    with pytest.raises(DoorstepError.Network) as caught:
        sync(zhang, f"http://127.0.0.1:{port}", d.zhang[1], timeout_seconds=5)
    assert str(caught.value) == OFFLINE + f"no connection / 无网络连接: http://127.0.0.1:{port}/v1/sync: Connection refused"
    assert zhang.pending_changes() == pending
    assert zhang.visit(v.id) == v

    assert sync(zhang, d.server.url, d.zhang[1]).accepted == len(pending)
    assert zhang.pending_changes() == []
    li = open_replica("li", member="m-li", device=d.li[0])
    sync(li, d.server.url, d.li[1])
    assert [x.id for x in li.visits(d.household)] == [v.id]


def test_wrong_token_raises_the_readable_401(district, open_replica):
    d = district
    zhang = open_replica("zhang", member="m-zhang", device=d.zhang[0])
    sync(zhang, d.server.url, d.zhang[1])
    zhang.record_visit(visit(d.household, "上门走访"))
    pending = zhang.pending_changes()

    with pytest.raises(DoorstepError.Server) as caught:
        sync(zhang, d.server.url, "not-a-device-token")
    assert str(caught.value) == (
        "同步服务器拒绝了请求（401）/ the sync server refused the request (401): "
        "未登录或凭证无效 / missing, wrong or revoked token"
    )
    assert zhang.pending_changes() == pending
    with pytest.raises(DoorstepError.InvalidInput, match="timeout_seconds must be at least 1"):
        sync(zhang, d.server.url, d.zhang[1], timeout_seconds=0)

    assert sync(zhang, d.server.url, d.zhang[1]).accepted == len(pending)
    assert zhang.pending_changes() == []


class Failing(doorstep.HttpTransport):
    """An app's transport that fails with an ordinary exception (not a TransportError)."""

    def __init__(self):
        self.requests = []

    async def post(self, request):
        self.requests.append(request)
        raise RuntimeError("proxy authentication required / 代理需要登录")


def test_a_transport_that_raises_gives_network_with_its_message_and_loses_nothing(district, open_replica):
    d = district
    zhang = open_replica("zhang", member="m-zhang", device=d.zhang[0])
    sync(zhang, d.server.url, d.zhang[1])
    v = zhang.record_visit(visit(d.household, "电话回访"))
    pending = zhang.pending_changes()

    failing = Failing()
    with pytest.raises(DoorstepError.Network) as caught:
        sync(zhang, d.server.url, d.zhang[1], failing, timeout_seconds=10)
    assert str(caught.value) == OFFLINE + "RuntimeError('proxy authentication required / 代理需要登录')"
    (request,) = failing.requests
    assert request.url == d.server.url + "/v1/sync"
    assert doorstep.HttpHeader(name="Authorization", value=f"Bearer {d.zhang[1]}") in request.headers
    assert request.timeout_ms == 10_000 and request.body
    assert zhang.pending_changes() == pending
    assert zhang.visit(v.id) == v

    assert sync(zhang, d.server.url, d.zhang[1]).accepted == len(pending)
    assert zhang.pending_changes() == []


def test_replica_usable_while_a_sync_waits_and_a_cancelled_sync_stops(open_replica, new_household):
    stalled = StalledServer()
    try:
        r = open_replica("k", member="m-zhang", device="d-k")
        h = r.create_household(new_household())

        async def scenario():
            task = asyncio.create_task(sync_async(r, stalled.url, "token", timeout_seconds=6))
            await asyncio.to_thread(stalled.next_connection)  # the request is on the wire
            # What a UI does meanwhile, from another thread: none of it waits for the sync.
            started = time.monotonic()
            listed = await asyncio.to_thread(r.list_households)
            v = await asyncio.to_thread(r.record_visit, visit(h.id, "同步时记录"))
            pending = await asyncio.to_thread(r.pending_changes)
            took = time.monotonic() - started
            assert not task.done(), f"the sync was still waiting while the replica answered ({took:.2f} s)"
            assert [s.id for s in listed] == [h.id]
            assert {p.household_id for p in pending} == {h.id}

            with pytest.raises(DoorstepError.Network) as caught:
                await task
            assert str(caught.value) == OFFLINE + "timed out / 超时"
            assert r.pending_changes() == pending
            assert r.visit(v.id) == v

            # Cancelling the task stops the native sync: the server sees the connection
            # closed at once, not after the 60 s default timeout.
            cancelled = asyncio.create_task(sync_async(r, stalled.url, "token"))
            connection = await asyncio.to_thread(stalled.next_connection)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(cancelled, 5)

            def read_to_eof():
                connection.settimeout(10)  # socket.timeout here fails the test
                while connection.recv(65536):
                    pass

            await asyncio.to_thread(read_to_eof)
            assert r.pending_changes() == pending
            assert r.list_households()[0].visit_count == 1

        asyncio.run(scenario())
    finally:
        stalled.close()
