//! Storage promises: schema upgrades from every earlier version, a corrupt household
//! isolated from the others (also when projections are rebuilt on opening), compaction, bad input refused without changes, and change
//! notifications.

mod common;
use common::*;
use doorstep_core::store::migrations;
use doorstep_core::*;
use std::sync::{Arc, Mutex};

/// A household document with a concurrent edit on one field, as bytes, made without a replica.
fn document_with_conflict() -> (String, Vec<u8>) {
    let author = |m: &str| Author { member_id: m.into(), device_id: format!("{m}-phone") };
    let mut a =
        HouseholdDocument::create(&automerge::ActorId::random(), &author("m-a"), 1_000, &new_household("m-a")).unwrap();
    let id = a.id().to_string();
    let mut b = HouseholdDocument::load(&id, &a.save(), &automerge::ActorId::random()).unwrap();
    a.update_household(&author("m-a"), 2_000, &HouseholdUpdate { address: Some("一号".into()), ..Default::default() })
        .unwrap();
    b.update_household(&author("m-b"), 2_000, &HouseholdUpdate { address: Some("二号".into()), ..Default::default() })
        .unwrap();
    b.record_visit(&author("m-b"), 3_000, &new_visit(&id, 3_000, "走访")).unwrap();
    let changes = b.changes_since(&[]);
    a.apply(changes).unwrap();
    (id, a.save())
}

#[test]
fn every_earlier_schema_upgrades_and_keeps_its_households() {
    for version in 0..migrations::current_version() as usize {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite3");
        let (household, bytes) = document_with_conflict();
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            migrations::create_at_version(&mut conn, version).unwrap();
            if version >= 1 {
                // What that release stored: the document, and its projection row.
                conn.execute(
                    "INSERT INTO doc_chunks (household_id, kind, data) VALUES (?1, 'snapshot', ?2)",
                    rusqlite::params![household, bytes],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO households (id, family_name, address, community_id, branch_id, archived)
                     VALUES (?1, '王', '旧地址', 'c-平西', 'b-一小', 0)",
                    [&household],
                )
                .unwrap();
            }
            let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(v, version as i64);
        }
        let replica = Replica::open(&path, "m-a", "a-phone").unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, migrations::current_version(), "upgraded from version {version}");
        if version >= 1 {
            let list = replica.list_households().unwrap();
            assert_eq!(list.len(), 1, "from version {version}");
            assert_eq!(list[0].visit_count, 1, "projection rebuilt from the document");
            assert_ne!(list[0].address, "旧地址", "projection rebuilt from the document");
            let conflicts = replica.conflicts(None).unwrap();
            assert_eq!(conflicts.len(), 1, "conflicts projected after upgrade from {version}");
            assert_eq!(conflicts[0].path, "household/address");
            assert_eq!(replica.heads().unwrap().len(), 1);
            // Edits from before the outbox (version 3) were never queued: the next sync
            // compares every household with the server's, which takes them.
            let request = replica.sync_request(sync::protocol::DEFAULT_PAGE_BYTES, sync::protocol::DEFAULT_PUSH_BYTES).unwrap();
            let compared: Vec<String> = request.reconcile.iter().flatten().map(|h| h.household_id.clone()).collect();
            assert_eq!(compared, if version < 3 { vec![household.clone()] } else { vec![] }, "from version {version}");
            // And the upgraded replica keeps working.
            replica.record_visit(&new_visit(&household, 5_000, "升级后走访")).unwrap();
            assert_eq!(replica.list_households().unwrap()[0].visit_count, 2);
        } else {
            assert!(replica.list_households().unwrap().is_empty());
        }
    }
}

#[test]
fn a_file_from_a_newer_app_version_is_refused_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.sqlite3");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = Replica::open(&path, "m", "d").unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 99);
}

#[test]
fn a_corrupt_household_gives_a_clear_error_and_the_others_stay_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sqlite3");
    let (bad, good) = {
        let r = Replica::open(&path, "m-a", "a-phone").unwrap();
        let bad = r.create_household(&new_household("m-a")).unwrap().id;
        let good = r.create_household(&new_household("m-a")).unwrap().id;
        r.record_visit(&new_visit(&bad, 1_000, "走访")).unwrap();
        (bad, good)
    };
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let n = conn
            .execute("UPDATE doc_chunks SET data = substr(data, 1, length(data) / 2) WHERE household_id = ?1", [&bad])
            .unwrap();
        assert!(n >= 1);
    }
    let r = Replica::open(&path, "m-a", "a-phone").unwrap();
    let err = r.household(&bad).unwrap_err();
    assert!(matches!(&err, Error::CorruptHousehold { household_id, .. } if *household_id == bad), "{err:?}");
    assert!(err.to_string().contains("已损坏") && err.to_string().contains("corrupt"), "{err}");
    let err = r.record_visit(&new_visit(&bad, 2_000, "再次走访")).unwrap_err();
    assert!(matches!(err, Error::CorruptHousehold { .. }));
    // Everything else works: lists, the other household, writes to it.
    assert_eq!(r.list_households().unwrap().len(), 2);
    r.household(&good).unwrap();
    r.record_visit(&new_visit(&good, 3_000, "走访")).unwrap();
    assert_eq!(r.visits(&good).unwrap().len(), 1);
    let summaries = r.list_households().unwrap();
    let bad_row = summaries.iter().find(|h| h.id == bad).unwrap();
    assert_eq!(bad_row.visit_count, 1, "the failed write changed nothing");
    // Exporting to a peer skips nothing silently: the corrupt household is an error.
    assert!(matches!(r.export_changes(&[]).unwrap_err(), Error::CorruptHousehold { .. }));
}

#[test]
fn many_edits_are_compacted_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sqlite3");
    let household;
    {
        let r = Replica::open(&path, "m-a", "a-phone").unwrap();
        household = r.create_household(&new_household("m-a")).unwrap().id;
        let conn = rusqlite::Connection::open(&path).unwrap();
        let kinds: Vec<String> = conn
            .prepare("SELECT kind FROM doc_chunks")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kinds, vec!["snapshot"], "a new household is stored as one compacted snapshot");
        for i in 0..150 {
            r.record_visit(&new_visit(&household, i * 1_000, &format!("第 {i} 次走访"))).unwrap();
        }
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let chunks: i64 = conn.query_row("SELECT count(*) FROM doc_chunks", [], |r| r.get(0)).unwrap();
    assert!(chunks <= 65, "compaction keeps chunks bounded, found {chunks}");
    let r = Replica::open(&path, "m-a", "a-phone").unwrap();
    let visits = r.visits(&household).unwrap();
    assert_eq!(visits.len(), 150);
    assert_eq!(visits[149].notes, "第 149 次走访");
}

#[test]
fn bad_input_is_refused_with_a_readable_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r = replica(&dir, "a", "m-a");
    let h = r.create_household(&new_household("m-a")).unwrap().id;
    let history = r.history(&h).unwrap().len();

    let mut v = new_visit(&h, 10_000, "x");
    v.ended_at_ms = Some(5_000);
    let err = r.record_visit(&v).unwrap_err();
    assert!(err.to_string().contains("a visit cannot end before it starts"), "{err}");

    let mut v = new_visit(&h, 10_000, "x");
    v.follow_up_on = Some("下周三".into());
    assert!(r.record_visit(&v).unwrap_err().to_string().contains("YYYY-MM-DD"));

    let err = r.record_visit(&new_visit("no-such-household", 1, "x")).unwrap_err();
    assert_eq!(err.to_string(), "未找到住户：no-such-household / household not found: no-such-household");

    let issue = r.raise_issue(&new_issue(&h)).unwrap().id;
    let history = history + 1;
    let err = r.transition_issue(&issue, &IssueStatus::Closed, "").unwrap_err();
    assert_eq!(err, Error::InvalidTransition { from: "open".into(), to: "closed".into() });
    assert!(err.to_string().contains("an issue cannot move from open to closed"));

    let bad_phone = GuardianUpdate { phone: Some("电话".into()), ..Default::default() };
    let g = r.household(&h).unwrap().guardians[0].id.clone();
    assert!(matches!(r.update_guardian(&h, &g, &bad_phone).unwrap_err(), Error::InvalidInput { .. }));

    // Edits that would leave a record the server refuses (it would hold every later
    // change to the household with it): refused on the phone, before its first sync too.
    let visit = r.record_visit(&new_visit(&h, 10_000, "x")).unwrap();
    let history = history + 1;
    let ends_early = VisitUpdate { ended_at_ms: Some(5_000), ..Default::default() };
    assert!(r.update_visit(&visit.id, &ends_early).unwrap_err().to_string().contains("cannot end before it starts"));
    let starts_late = VisitUpdate { started_at_ms: Some(visit.ended_at_ms.unwrap() + 1), ..Default::default() };
    assert!(r.update_visit(&visit.id, &starts_late).unwrap_err().to_string().contains("cannot end before it starts"));
    for blank in [
        HouseholdUpdate { community_id: Some(" ".into()), ..Default::default() },
        HouseholdUpdate { branch_id: Some(String::new()), ..Default::default() },
    ] {
        assert!(matches!(r.update_household(&h, &blank).unwrap_err(), Error::InvalidInput { .. }), "{blank:?}");
    }
    let nameless = GuardianUpdate { name: Some("  ".into()), ..Default::default() };
    assert!(matches!(r.update_guardian(&h, &g, &nameless).unwrap_err(), Error::InvalidInput { .. }));

    // Values that are no kind's code (`Other` round-trips a newer version's code, such as
    // `summer_camp`, but an empty or free-text value would count as a kind of its own).
    let unknown = |e: Error| matches!(&e, Error::InvalidInput { .. }) && e.to_string().contains("must be one of");
    let issue_of = |category: IssueCategory, urgency: Urgency| NewIssue { category, urgency, ..new_issue(&h) };
    assert!(unknown(r.raise_issue(&issue_of(IssueCategory::Other(String::new()), Urgency::Normal)).unwrap_err()));
    assert!(unknown(r.raise_issue(&issue_of(IssueCategory::Enrolment, Urgency::Other("Very High".into()))).unwrap_err()));
    let urgent = IssueUpdate { urgency: Some(Urgency::Other("很急".into())), ..Default::default() };
    assert!(unknown(r.update_issue(&issue, &urgent).unwrap_err()));
    let by_pigeon = NewVisit { mode: VisitMode::Other(" ".into()), ..new_visit(&h, 1, "x") };
    assert!(unknown(r.record_visit(&by_pigeon).unwrap_err()));
    let odd_topic = VisitUpdate { topics: Some(vec![VisitTopic::Other("天气".into())]), ..Default::default() };
    assert!(unknown(r.update_visit(&visit.id, &odd_topic).unwrap_err()));
    let student = NewStudent { name: "王小明".into(), school: "一小".into(), grade: "三年级".into(), hukou_status: HukouStatus::Other("x-y".into()) };
    assert!(unknown(r.add_student(&h, &student).unwrap_err()));
    let camp = VisitUpdate { topics: Some(vec![VisitTopic::Other("summer_camp".into())]), ..Default::default() };
    r.update_visit(&visit.id, &camp).unwrap();
    let history = history + 1;

    // A change with one flipped bit (its checksum no longer matches): refused.
    let mut flipped = r.export_changes(&[]).unwrap();
    let last = flipped[0].changes[0].len() - 1;
    flipped[0].changes[0][last] ^= 0x01;
    let err = replica(&dir, "c", "m-c").import_changes(&flipped).unwrap_err();
    assert!(err.to_string().contains("cannot be decoded"), "{err}");

    // Garbage from a peer: refused whole, nothing stored.
    let good = r.export_changes(&[]).unwrap();
    let mut batches = good.clone();
    batches.push(HouseholdChanges { household_id: "h-x".into(), changes: vec![b"not an automerge change".to_vec()] });
    let peer = replica(&dir, "b", "m-b");
    let err = peer.import_changes(&batches).unwrap_err();
    assert!(err.to_string().contains("cannot be decoded"), "{err}");
    assert!(peer.list_households().unwrap().is_empty());
    assert!(peer.heads().unwrap().is_empty());

    assert_eq!(r.history(&h).unwrap().len(), history, "no refused call left a change");
    assert_eq!(r.issue(&issue).unwrap().status, IssueStatus::Open);

    // Opening the file as another device is refused.
    drop(r);
    let err = Replica::open(dir.path().join("a.sqlite3"), "m-a", "someone-else").unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }));
}

#[test]
fn changes_arriving_before_their_dependencies_wait_durably_and_apply_later() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&dir, "a", "m-a");
    let h = a.create_household(&new_household("m-a")).unwrap().id;
    let first = a.export_changes(&[]).unwrap();
    let heads_after_create = a.heads().unwrap();
    a.record_visit(&new_visit(&h, 1_000, "走访")).unwrap();
    let later = a.export_changes(&heads_after_create).unwrap();
    assert_eq!(later[0].changes.len(), 1);

    let path = dir.path().join("b.sqlite3");
    {
        let b = Replica::open(&path, "m-b", "b-phone").unwrap();
        let report = b.import_changes(&later).unwrap();
        assert_eq!((report.changes_applied, report.changes_waiting), (0, 1));
        assert!(b.list_households().unwrap().is_empty());
    }
    let b = Replica::open(&path, "m-b", "b-phone").unwrap();
    let report = b.import_changes(&first).unwrap();
    assert_eq!((report.changes_applied, report.changes_waiting), (2, 0));
    assert_eq!(b.list_households().unwrap()[0].visit_count, 1);
    assert_eq!(b.household_json(&h).unwrap(), a.household_json(&h).unwrap());
}

#[derive(Default)]
struct Recorder(Mutex<Vec<ChangeEvent>>);
impl ChangeListener for Recorder {
    fn on_change(&self, event: ChangeEvent) {
        self.0.lock().unwrap().push(event);
    }
}

#[test]
fn listeners_hear_local_and_remote_changes_until_the_subscription_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&dir, "a", "m-a");
    let b = replica(&dir, "b", "m-b");
    let recorder = Arc::new(Recorder::default());
    let subscription = b.subscribe(recorder.clone());
    let h = a.create_household(&new_household("m-a")).unwrap().id;
    send(&a, &b);
    b.record_visit(&new_visit(&h, 1_000, "走访")).unwrap();
    // A refused call is not a change.
    let _ = b.transition_issue("nope", &IssueStatus::Closed, "");
    assert_eq!(
        *recorder.0.lock().unwrap(),
        vec![
            ChangeEvent { household_ids: vec![h.clone()], origin: ChangeOrigin::Remote },
            ChangeEvent { household_ids: vec![h.clone()], origin: ChangeOrigin::Local },
        ]
    );
    drop(subscription);
    b.record_visit(&new_visit(&h, 2_000, "走访")).unwrap();
    assert_eq!(recorder.0.lock().unwrap().len(), 2);
}

#[test]
fn history_says_who_changed_what_and_when() {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&dir, "a", "m-zhang");
    let b = replica(&dir, "b", "m-li");
    let h = a.create_household(&new_household("m-zhang")).unwrap().id;
    send(&a, &b);
    let v = b.record_visit(&new_visit(&h, 1_000, "走访")).unwrap().id;
    send(&b, &a);
    let history = a.history(&h).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].by.member_id, "m-zhang");
    assert_eq!(history[0].by.device_id, "a-device");
    assert!(history[0].action.starts_with("create_household"));
    assert_eq!(history[1].by.member_id, "m-li");
    assert_eq!(history[1].action, format!("record_visit {v}"));
    assert!(history[1].by.at_ms >= history[0].by.at_ms);
    assert_eq!(history[0].action, format!("create_household {h}"));

    // The record a change wrote is named in its history entry (messages carry only its
    // kind; the id comes from the change's operations).
    let issue = a.raise_issue(&new_issue(&h)).unwrap().id;
    a.transition_issue(&issue, &IssueStatus::Acknowledged, "已联系").unwrap();
    a.comment_on_issue(&issue, "周三再回访").unwrap();
    let guardian = NewGuardian { name: "王建军".into(), relation: "祖父".into(), phone: "13800000000".into() };
    let household = a.add_guardian(&h, &guardian).unwrap();
    let guardian_id = household.guardians.iter().find(|g| g.name == "王建军").unwrap().id.clone();
    let actions: Vec<String> = a.history(&h).unwrap().into_iter().skip(2).map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            format!("raise_issue {issue}"),
            format!("transition_issue {issue} open -> acknowledged"),
            format!("comment_on_issue {issue}"),
            format!("add_guardian {guardian_id}"),
        ]
    );
}

#[test]
fn overdue_and_overview_count_from_projections() {
    let dir = tempfile::tempdir().unwrap();
    let r = replica(&dir, "a", "m-a");
    let h1 = r.create_household(&new_household("m-a")).unwrap().id;
    let mut other = new_household("m-a");
    other.community_id = "c-夏北".into();
    let h2 = r.create_household(&other).unwrap().id;
    r.record_visit(&new_visit(&h1, 1_000, "走访")).unwrap();
    let late = r.raise_issue(&new_issue(&h1)).unwrap().id; // due 2026-12-01
    let mut later = new_issue(&h2);
    later.due_on = Some("2027-03-01".into());
    r.raise_issue(&later).unwrap();
    let done = r.raise_issue(&new_issue(&h2)).unwrap().id;
    let mut undated = new_issue(&h2);
    undated.due_on = None;
    let undated = r.raise_issue(&undated).unwrap().id;
    r.transition_issue(&undated, &IssueStatus::Closed, "").unwrap_err();
    r.transition_issue(&undated, &IssueStatus::Acknowledged, "已知悉").unwrap();
    r.transition_issue(&done, &IssueStatus::Resolved, "已解决").unwrap();

    let overdue = r.overdue_issues("2026-12-10").unwrap();
    assert_eq!(overdue.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec![late.as_str()]);
    assert_eq!(r.open_issues().unwrap().len(), 3);
    assert!(r.overdue_issues("12/10/2026").is_err());

    let overview = r.overview("2026-12-10").unwrap();
    let pingxi = overview.iter().find(|o| o.community_id == "c-平西").unwrap();
    assert_eq!((pingxi.households, pingxi.visited_households, pingxi.visits), (1, 1, 1));
    assert_eq!((pingxi.open_issues, pingxi.overdue_issues), (1, 1));
    let xiabei = overview.iter().find(|o| o.community_id == "c-夏北").unwrap();
    assert_eq!((xiabei.households, xiabei.visited_households, xiabei.open_issues, xiabei.overdue_issues), (1, 0, 2, 0));
    assert_eq!(
        xiabei.issues_by_status,
        vec![(IssueStatus::Open, 1), (IssueStatus::Acknowledged, 1), (IssueStatus::Resolved, 1)],
        "an undated open problem counts as open, never as overdue"
    );

    // An archived household leaves the households counted, not its visit nor its problem.
    r.update_household(&h1, &HouseholdUpdate { archived: Some(true), ..HouseholdUpdate::default() }).unwrap();
    let overview = r.overview("2026-12-10").unwrap();
    let pingxi = overview.iter().find(|o| o.community_id == "c-平西").unwrap();
    assert_eq!((pingxi.households, pingxi.visited_households, pingxi.visits), (0, 0, 1));
    assert_eq!((pingxi.open_issues, pingxi.overdue_issues), (1, 1));
}

#[test]
fn a_household_that_cannot_be_read_keeps_its_rows_when_projections_are_rebuilt_and_the_replica_opens() {
    // After an upgrade that rebuilds the projections, one household whose visit can no
    // longer be read (its start time a text) must not keep the replica from opening.
    use automerge::{transaction::Transactable, ReadDoc};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sqlite3");
    let (bad, good, visit) = {
        let r = Replica::open(&path, "m-a", "a-phone").unwrap();
        let bad = r.create_household(&new_household("m-a")).unwrap().id;
        let good = r.create_household(&new_household("m-a")).unwrap().id;
        let visit = r.record_visit(&new_visit(&bad, 1_000, "走访")).unwrap().id;
        r.record_visit(&new_visit(&good, 2_000, "走访")).unwrap();
        (bad, good, visit)
    };
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn.prepare("SELECT data FROM doc_chunks WHERE household_id = ?1 ORDER BY seq").unwrap();
        let bytes: Vec<u8> =
            stmt.query_map([&bad], |r| r.get::<_, Vec<u8>>(0)).unwrap().flat_map(|chunk| chunk.unwrap()).collect();
        drop(stmt);
        let mut doc = automerge::AutoCommit::load(&bytes).unwrap();
        let heads = doc.get_heads();
        let (_, visits) = doc.get(automerge::ROOT, "visits").unwrap().unwrap();
        let (_, record) = doc.get(&visits, visit.as_str()).unwrap().unwrap();
        doc.put(&record, "started_at", "昨天").unwrap();
        let increment = doc.save_after(&heads);
        conn.execute("INSERT INTO doc_chunks (household_id, kind, data) VALUES (?1, 'incremental', ?2)", rusqlite::params![bad, increment])
            .unwrap();
        conn.execute("UPDATE households SET family_name = '旧' WHERE id = ?1", [&good]).unwrap();
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('rebuild_projections', '1')", []).unwrap();
    }
    let r = Replica::open(&path, "m-a", "a-phone").unwrap();
    let rows = r.list_households().unwrap();
    let name = r.household(&good).unwrap().family_name;
    assert_eq!(rows.iter().find(|h| h.id == good).unwrap().family_name, name, "the readable household is rebuilt");
    assert_eq!(rows.iter().find(|h| h.id == bad).unwrap().visit_count, 1, "the other keeps its rows");
    assert!(r.visits(&bad).is_err(), "and reading it says why");
    drop(r);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let left: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'rebuild_projections'", [], |r| r.get(0)).ok();
    assert_eq!(left, None, "rebuilt once");
}

#[test]
fn a_household_dropped_for_a_discarded_change_is_told_to_the_listeners() {
    use doorstep_core::sync::protocol::{Ack, Outcome, Position, SyncResponse};
    let dir = tempfile::tempdir().unwrap();
    let phone = replica(&dir, "a", "m-a");
    let household = phone.create_household(&new_household("m-a")).unwrap().id;
    let recorder = Arc::new(Recorder::default());
    let _subscription = phone.subscribe(recorder.clone());
    let discarded = phone.pending_changes().unwrap().into_iter().map(|p| Ack {
        hash: p.change_hash.parse::<automerge::ChangeHash>().unwrap().0,
        outcome: Outcome::Discarded { reason: "管理员丢弃 / an admin discarded it".into() },
    });
    let step = phone.apply_sync_response(SyncResponse::new(discarded.collect(), Position::default(), Role::Member)).unwrap();
    assert!(step.again, "asks for the household whole");
    assert!(phone.list_households().unwrap().is_empty());
    let heard = recorder.0.lock().unwrap();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0].household_ids, [household]);
}

#[test]
fn a_status_an_app_newer_than_this_one_wrote_counts_as_open_on_every_screen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sqlite3");
    let h = {
        let r = Replica::open(&path, "m-a", "a-phone").unwrap();
        let h = r.create_household(&new_household("m-a")).unwrap().id;
        r.raise_issue(&new_issue(&h)).unwrap();
        h
    };
    // As the projection stores an issue whose status this app does not know.
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(conn.execute("UPDATE issues SET status = 'escalated'", []).unwrap(), 1);
    drop(conn);
    let r = Replica::open(&path, "m-a", "a-phone").unwrap();
    let open = r.open_issues().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].status, IssueStatus::Other("escalated".into()));
    assert_eq!(r.overdue_issues("2099-01-01").unwrap().len(), 1, "due 2026-12-01");
    assert_eq!(r.list_households().unwrap().iter().find(|l| l.id == h).unwrap().open_issue_count, 1);
    let overview = r.overview("2099-01-01").unwrap();
    assert_eq!((overview[0].open_issues, overview[0].overdue_issues), (1, 1));
}
