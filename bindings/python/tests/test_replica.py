"""The same flow as the Kotlin suite, from Python, against the real library."""

import threading

import pytest

import doorstep
from doorstep import (
    ChangeEvent,
    ChangeOrigin,
    DoorstepError,
    GuardianUpdate,
    HouseholdChanges,
    HouseholdUpdate,
    IssueCategory,
    IssueStatus,
    Location,
    NewIssue,
    NewVisit,
    Urgency,
    VisitMode,
    VisitTopic,
)


def exchange(a, b):
    """What a sync does, by hand: each side sends what the other lacks."""
    b.import_changes(a.export_changes(b.heads()))
    a.import_changes(b.export_changes(a.heads()))


class Recorder(doorstep.ChangeListener):
    def __init__(self):
        self.events = []
        self.threads = []

    def on_change(self, event):
        self.events.append(event)
        self.threads.append(threading.current_thread())


def test_open_create_household_and_record_a_visit(open_replica, new_household):
    r = open_replica()
    assert r.member_id() == "m-zhang"
    h = r.create_household(new_household())
    assert h.family_name == "王"
    assert h.guardians[0].relation == "母亲"
    assert h.students[0].hukou_status == doorstep.HukouStatus.NON_LOCAL()

    v = r.record_visit(
        NewVisit(
            household_id=h.id,
            started_at_ms=1_750_000_000_000,
            mode=VisitMode.IN_PERSON(),
            people_met=["母亲 李芳", "学生 王小明"],
            topics=[VisitTopic.ENROLMENT_POLICY(), VisitTopic.OTHER(value="summer_camp")],
            notes="家长关心入学政策",
            location=Location(latitude=23.03, longitude=113.12),
        )
    )
    assert v.visitors == ["m-zhang"], "the recording member is added"
    assert v.topics == [VisitTopic.ENROLMENT_POLICY(), VisitTopic.OTHER(value="summer_camp")]
    assert v.location.latitude == 23.03
    assert v.deleted is None
    assert r.visit(v.id) == v
    assert r.visits(h.id) == [v]

    summary = r.list_households()[0]
    assert summary.visit_count == 1
    assert summary.last_visit_at_ms == 1_750_000_000_000

    assert r.delete_visit(v.id).deleted is not None
    assert r.restore_visit(v.id).deleted is None

    del r  # closes the file once the last reference goes
    again = open_replica()
    assert again.visit(v.id).notes == "家长关心入学政策"
    assert len(again.history(h.id)) >= 4


def test_raise_an_issue_and_move_it(open_replica, new_household):
    r = open_replica()
    h = r.create_household(new_household())
    issue = r.raise_issue(
        NewIssue(
            household_id=h.id,
            category=IssueCategory.ENROLMENT(),
            title="随迁子女入学材料",
            urgency=Urgency.HIGH(),
            due_on="2025-07-01",
        )
    )
    assert issue.status == IssueStatus.OPEN()
    assert [i.id for i in r.overdue_issues("2025-07-02")] == [issue.id]

    assert r.transition_issue(issue.id, IssueStatus.ACKNOWLEDGED(), "已受理").status == IssueStatus.ACKNOWLEDGED()
    assert r.transition_issue(issue.id, IssueStatus.IN_PROGRESS(), "联系学校").status == IssueStatus.IN_PROGRESS()
    r.comment_on_issue(issue.id, "学校答复下周补录")
    resolved = r.transition_issue(issue.id, IssueStatus.RESOLVED(), "已补录")
    assert resolved.status == IssueStatus.RESOLVED()
    assert len(resolved.transitions) == 3
    assert resolved.comments[0].text == "学校答复下周补录"
    assert r.open_issues() == []
    assert r.transition_issue(issue.id, IssueStatus.CLOSED(), "家长满意").status == IssueStatus.CLOSED()

    overview = r.overview("2025-07-02")[0]
    assert overview.community_id == "c-pingzhou"
    assert overview.open_issues == 0
    assert [s.count for s in overview.issues_by_status if s.status == IssueStatus.CLOSED()] == [1]

    assert doorstep.issue_can_move(IssueStatus.CLOSED(), IssueStatus.OPEN())
    assert not doorstep.issue_can_move(IssueStatus.OPEN(), IssueStatus.CLOSED())


def test_invalid_transition_is_typed_and_readable(open_replica, new_household):
    r = open_replica()
    h = r.create_household(new_household())
    issue = r.raise_issue(
        NewIssue(household_id=h.id, category=IssueCategory.HARDSHIP(), title="家庭困难", urgency=Urgency.NORMAL())
    )
    with pytest.raises(DoorstepError.InvalidTransition) as caught:
        r.transition_issue(issue.id, IssueStatus.CLOSED(), "直接关闭")
    assert str(caught.value) == "问题状态不能从“open”改为“closed” / an issue cannot move from open to closed"
    assert r.issue(issue.id).status == IssueStatus.OPEN()


def test_unknown_ids_raise_not_found(open_replica):
    r = open_replica()
    with pytest.raises(DoorstepError.NotFound) as caught:
        r.household("h-nope")
    assert str(caught.value) == "未找到住户：h-nope / household not found: h-nope"
    with pytest.raises(DoorstepError.NotFound, match="household not found: h-nope"):
        r.record_visit(NewVisit(household_id="h-nope", started_at_ms=1, mode=VisitMode.PHONE()))
    with pytest.raises(DoorstepError, match="^未找到问题"):  # every variant is a DoorstepError
        r.issue("i-nope")


def test_bad_input_raises_invalid_input(open_replica, tmp_path):
    with pytest.raises(DoorstepError.InvalidInput, match="党员编号和设备编号不能为空"):
        doorstep.Replica.open(str(tmp_path / "x.sqlite3"), " ", "d-1")
    r = open_replica()
    with pytest.raises(DoorstepError.InvalidInput, match="^输入无效："):
        r.overdue_issues("next tuesday")
    with pytest.raises(DoorstepError.InvalidInput, match="cannot be decoded"):
        r.import_changes([HouseholdChanges(household_id="h-1", changes=[b"\x01\x02\x03"])])
    assert r.list_households() == []


def test_conflict_between_two_replicas_is_listed_and_resolved(open_replica, new_household):
    a = open_replica("a", member="m-zhang")
    b = open_replica("b", member="m-li")
    h = a.create_household(new_household())
    report = b.import_changes(a.export_changes(b.heads()))
    assert report.households_changed == [h.id]
    assert report.changes_waiting == 0
    guardian = b.household(h.id).guardians[0].id

    a.update_guardian(h.id, guardian, GuardianUpdate(phone="13911111111"))
    b.update_guardian(h.id, guardian, GuardianUpdate(phone="13722222222"))
    b.update_household(h.id, HouseholdUpdate(address="平洲路 2 号"))
    exchange(a, b)

    conflicts = a.conflicts(h.id)
    assert conflicts == b.conflicts(None)
    (conflict,) = conflicts
    assert conflict.path == f"household/guardians/{guardian}/phone"
    assert {v.value for v in conflict.values} == {"13911111111", "13722222222"}
    assert {v.by.member_id for v in conflict.values} == {"m-zhang", "m-li"}
    assert a.household(h.id).guardians[0].phone == conflict.values[0].value
    assert a.household(h.id).address == "平洲路 2 号"

    with pytest.raises(DoorstepError.InvalidInput):
        b.resolve_conflict(h.id, conflict.path, "10000")

    loser = conflict.values[1].value
    b.resolve_conflict(h.id, conflict.path, loser)
    exchange(a, b)
    for r in (a, b):
        assert r.household(h.id).guardians[0].phone == loser
        assert r.conflicts(None) == []


def test_listener_hears_changes_until_cancelled(open_replica, new_household):
    a = open_replica("a")
    b = open_replica("b", member="m-li")
    recorder = Recorder()
    handle = a.subscribe(recorder)
    assert handle.is_active()

    h = a.create_household(new_household())
    assert recorder.events == [ChangeEvent(household_ids=[h.id], origin=ChangeOrigin.LOCAL)]

    b.import_changes(a.export_changes(b.heads()))
    b.update_household(h.id, HouseholdUpdate(notes="周末在家"))
    a.import_changes(b.export_changes(a.heads()))
    assert recorder.events[-1] == ChangeEvent(household_ids=[h.id], origin=ChangeOrigin.REMOTE)
    assert len(recorder.events) == 2

    handle.cancel()
    assert not handle.is_active()
    a.update_household(h.id, HouseholdUpdate(notes="周末不在家"))
    assert len(recorder.events) == 2, "no event after cancel"

    # Dropping a handle also unsubscribes.
    second = Recorder()
    dropped = a.subscribe(second)
    a.update_household(h.id, HouseholdUpdate(archived=True))
    del dropped
    a.update_household(h.id, HouseholdUpdate(archived=False))
    assert len(second.events) == 1


def test_failing_listener_does_not_fail_the_write(open_replica, new_household):
    class Failing(doorstep.ChangeListener):
        def on_change(self, event):
            raise RuntimeError("listener bug")

    r = open_replica()
    failing = r.subscribe(Failing())
    recorder = Recorder()
    ok = r.subscribe(recorder)
    h = r.create_household(new_household())
    assert [e.household_ids for e in recorder.events] == [[h.id]]
    failing.cancel()
    ok.cancel()


def test_unknown_enum_values_survive(open_replica, new_household):
    r = open_replica()
    h = r.create_household(new_household())
    v = r.record_visit(NewVisit(household_id=h.id, started_at_ms=1, mode=VisitMode.OTHER(value="bicycle_ride")))
    assert r.visit(v.id).mode == VisitMode.OTHER(value="bicycle_ride")
    w = r.record_visit(NewVisit(household_id=h.id, started_at_ms=2, mode=VisitMode.OTHER(value="phone")))
    assert w.mode == VisitMode.PHONE()


def test_one_replica_from_many_threads(open_replica, new_household):
    r = open_replica()
    households = [r.create_household(new_household(f"户{i}")) for i in range(4)]
    recorder = Recorder()
    handle = r.subscribe(recorder)
    errors = []

    def work(household_id):
        try:
            for i in range(10):
                r.record_visit(NewVisit(household_id=household_id, started_at_ms=i, mode=VisitMode.IN_PERSON()))
                r.list_households()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(h.id,)) for h in households]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(s.visit_count for s in r.list_households()) == [10, 10, 10, 10]
    assert len(recorder.events) == 40
    assert set(recorder.threads) == set(threads), "listeners run on the writing threads"
    handle.cancel()
