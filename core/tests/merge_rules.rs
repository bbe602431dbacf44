//! One test per merge rule of `docs/data-model.md`: two phones edit offline, then sync.

mod common;
use common::*;
use doorstep_core::*;

struct Two {
    _dir: tempfile::TempDir,
    a: Replica,
    b: Replica,
    household: String,
}

/// Two members' phones holding the same household, in sync, about to go offline.
fn two_phones() -> Two {
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&dir, "a", "m-zhang");
    let b = replica(&dir, "b", "m-li");
    let household = a.create_household(&new_household("m-zhang")).unwrap().id;
    sync_pair(&a, &b);
    Two { _dir: dir, a, b, household }
}

#[test]
fn visits_recorded_offline_on_two_phones_both_survive() {
    let t = two_phones();
    let va = t.a.record_visit(&new_visit(&t.household, 1_000, "张老师走访")).unwrap();
    let vb = t.b.record_visit(&new_visit(&t.household, 2_000, "李老师电话回访")).unwrap();
    sync_pair(&t.a, &t.b);
    for r in [&t.a, &t.b] {
        let ids: Vec<String> = r.visits(&t.household).unwrap().into_iter().map(|v| v.id).collect();
        assert_eq!(ids, vec![va.id.clone(), vb.id.clone()]);
        assert_eq!(r.list_households().unwrap()[0].visit_count, 2);
    }
    assert_eq!(t.a.household_json(&t.household).unwrap(), t.b.household_json(&t.household).unwrap());
}

#[test]
fn concurrent_edits_to_different_fields_both_survive() {
    let t = two_phones();
    t.a.update_household(&t.household, &HouseholdUpdate { address: Some("平洲路 2 号".into()), ..Default::default() })
        .unwrap();
    t.b.update_household(&t.household, &HouseholdUpdate { family_name: Some("王（新）".into()), ..Default::default() })
        .unwrap();
    sync_pair(&t.a, &t.b);
    for r in [&t.a, &t.b] {
        let h = r.household(&t.household).unwrap();
        assert_eq!(h.address, "平洲路 2 号");
        assert_eq!(h.family_name, "王（新）");
        assert!(r.conflicts(None).unwrap().is_empty());
    }
}

#[test]
fn same_field_edited_concurrently_has_a_winner_and_a_listed_conflict_until_resolved() {
    let t = two_phones();
    let guardian = t.a.household(&t.household).unwrap().guardians[0].id.clone();
    let phone = |p: &str| GuardianUpdate { phone: Some(p.into()), ..Default::default() };
    t.a.update_guardian(&t.household, &guardian, &phone("13911111111")).unwrap();
    t.b.update_guardian(&t.household, &guardian, &phone("13722222222")).unwrap();
    sync_pair(&t.a, &t.b);

    let shown_a = t.a.household(&t.household).unwrap().guardians[0].phone.clone();
    let shown_b = t.b.household(&t.household).unwrap().guardians[0].phone.clone();
    assert_eq!(shown_a, shown_b, "both phones show the same winner");

    let conflicts = t.a.conflicts(Some(&t.household)).unwrap();
    assert_eq!(conflicts, t.b.conflicts(Some(&t.household)).unwrap());
    assert_eq!(conflicts.len(), 1);
    let c = &conflicts[0];
    assert_eq!(c.path, format!("household/guardians/{guardian}/phone"));
    assert_eq!(c.values[0].value, shown_a, "the shown value comes first");
    let mut who: Vec<(String, String, String)> =
        c.values.iter().map(|v| (v.value.clone(), v.by.member_id.clone(), v.by.device_id.clone())).collect();
    who.sort();
    assert_eq!(
        who,
        vec![
            ("13722222222".into(), "m-li".into(), "b-device".into()),
            ("13911111111".into(), "m-zhang".into(), "a-device".into())
        ]
    );
    assert!(c.values.iter().all(|v| v.by.at_ms > 1_600_000_000_000));

    // Choosing something that was not typed is refused and changes nothing.
    let err = t.b.resolve_conflict(&t.household, &c.path, "10000").unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_eq!(t.b.conflicts(None).unwrap().len(), 1);

    // The loser's value is chosen: it becomes the value everywhere and the conflict closes.
    let loser = c.values[1].value.clone();
    t.b.resolve_conflict(&t.household, &c.path, &loser).unwrap();
    sync_pair(&t.a, &t.b);
    for r in [&t.a, &t.b] {
        assert_eq!(r.household(&t.household).unwrap().guardians[0].phone, loser);
        assert!(r.conflicts(None).unwrap().is_empty());
    }
}

#[test]
fn concurrent_status_transitions_converge_by_the_written_rule_and_all_stay_in_history() {
    let t = two_phones();
    let issue = t.a.raise_issue(&new_issue(&t.household)).unwrap().id;
    sync_pair(&t.a, &t.b);
    // The member marks it resolved while the coordinator refers it to the street office.
    t.a.transition_issue(&issue, &IssueStatus::Resolved, "家长已自行完成现场确认").unwrap();
    t.b.transition_issue(&issue, &IssueStatus::Referred, "转交街道户联系").unwrap();
    sync_pair(&t.a, &t.b);
    let ia = t.a.issue(&issue).unwrap();
    let ib = t.b.issue(&issue).unwrap();
    // Rule: among concurrent moves, the one that keeps the problem active wins.
    assert_eq!(ia.status, IssueStatus::Referred);
    assert_eq!(ia, ib);
    let moves: Vec<(IssueStatus, IssueStatus)> = ia.transitions.iter().map(|t| (t.from.clone(), t.to.clone())).collect();
    assert_eq!(moves.len(), 2);
    assert!(moves.contains(&(IssueStatus::Open, IssueStatus::Resolved)));
    assert!(moves.contains(&(IssueStatus::Open, IssueStatus::Referred)));
    // The projection agrees with the document on both phones.
    for r in [&t.a, &t.b] {
        assert_eq!(r.open_issues().unwrap()[0].status, IssueStatus::Referred);
    }
    // The concurrent moves are shown as a conflict, settled by one more transition.
    let c = t.a.conflicts(Some(&t.household)).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].path, format!("issues/{issue}/status"));
    t.a.resolve_conflict(&t.household, &c[0].path, "resolved").unwrap();
    sync_pair(&t.a, &t.b);
    for r in [&t.a, &t.b] {
        let i = r.issue(&issue).unwrap();
        assert_eq!(i.status, IssueStatus::Resolved);
        assert_eq!(i.transitions.len(), 3);
        assert!(r.conflicts(None).unwrap().is_empty());
        assert!(r.open_issues().unwrap().is_empty());
    }
}

#[test]
fn a_status_conflict_settles_on_the_value_that_lost_too() {
    let t = two_phones();
    let issue = t.a.raise_issue(&new_issue(&t.household)).unwrap().id;
    sync_pair(&t.a, &t.b);
    t.a.transition_issue(&issue, &IssueStatus::Acknowledged, "已了解").unwrap();
    t.b.transition_issue(&issue, &IssueStatus::Referred, "转交街道").unwrap();
    sync_pair(&t.a, &t.b);
    assert_eq!(t.a.issue(&issue).unwrap().status, IssueStatus::Referred, "the later stage wins");
    let c = t.a.conflicts(Some(&t.household)).unwrap();
    // Referred to acknowledged is no move a person may make; the choice between two
    // moves from open is.
    t.a.resolve_conflict(&t.household, &c[0].path, "acknowledged").unwrap();
    sync_pair(&t.a, &t.b);
    for r in [&t.a, &t.b] {
        let i = r.issue(&issue).unwrap();
        assert_eq!(i.status, IssueStatus::Acknowledged);
        let settled = i.transitions.last().unwrap();
        assert_eq!((&settled.from, &settled.to), (&IssueStatus::Open, &IssueStatus::Acknowledged));
        assert!(r.conflicts(None).unwrap().is_empty());
    }
}

#[test]
fn edited_notes_merge_character_by_character() {
    let t = two_phones();
    let visit = t.a.record_visit(&new_visit(&t.household, 1_000, "孩子作业习惯需要关注。")).unwrap().id;
    let edit = |notes: &str| VisitUpdate { notes: Some(notes.into()), ..Default::default() };
    // The first edit turns the note (written whole with the visit) into text ...
    t.a.update_visit(&visit, &edit("孩子作业习惯需要关注")).unwrap();
    sync_pair(&t.a, &t.b);
    // ... so edits made on two phones after it merge.
    t.a.update_visit(&visit, &edit("家长反映：孩子作业习惯需要关注")).unwrap();
    t.b.update_visit(&visit, &edit("孩子作业习惯需要关注。下周回访。")).unwrap();
    sync_pair(&t.a, &t.b);
    for r in [&t.a, &t.b] {
        assert_eq!(r.visit(&visit).unwrap().notes, "家长反映：孩子作业习惯需要关注。下周回访。");
        assert!(r.conflicts(None).unwrap().is_empty());
    }
    // Household notes too.
    let notes = |n: &str| HouseholdUpdate { notes: Some(n.into()), ..Default::default() };
    t.a.update_household(&t.household, &notes("家长关心积分入学。")).unwrap();
    sync_pair(&t.a, &t.b);
    t.a.update_household(&t.household, &notes("【重要】家长关心积分入学。")).unwrap();
    t.b.update_household(&t.household, &notes("家长关心积分入学。已讲解招生方案")).unwrap();
    sync_pair(&t.a, &t.b);
    assert_eq!(t.b.household(&t.household).unwrap().notes, "【重要】家长关心积分入学。已讲解招生方案");
}

#[test]
fn a_note_first_edited_on_two_phones_keeps_both_wordings_until_one_is_chosen() {
    let t = two_phones();
    let visit = t.a.record_visit(&new_visit(&t.household, 1_000, "孩子作业习惯需要关注。")).unwrap().id;
    sync_pair(&t.a, &t.b);
    let edit = |notes: &str| VisitUpdate { notes: Some(notes.into()), ..Default::default() };
    t.a.update_visit(&visit, &edit("家长反映：孩子作业习惯需要关注。")).unwrap();
    t.b.update_visit(&visit, &edit("孩子作业习惯需要关注。下周回访。")).unwrap();
    sync_pair(&t.a, &t.b);
    let path = format!("visits/{visit}/notes");
    for r in [&t.a, &t.b] {
        let c = r.conflicts(None).unwrap();
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].path, path);
        let mut wordings: Vec<(&str, &str)> =
            c[0].values.iter().map(|v| (v.value.as_str(), v.by.member_id.as_str())).collect();
        wordings.sort();
        assert_eq!(wordings, [("孩子作业习惯需要关注。下周回访。", "m-li"), ("家长反映：孩子作业习惯需要关注。", "m-zhang")]);
    }
    t.b.resolve_conflict(&t.household, &path, "家长反映：孩子作业习惯需要关注。").unwrap();
    sync_pair(&t.a, &t.b);
    for r in [&t.a, &t.b] {
        assert_eq!(r.visit(&visit).unwrap().notes, "家长反映：孩子作业习惯需要关注。");
        assert!(r.conflicts(None).unwrap().is_empty());
    }
    // The chosen wording is a plain string again; the next edit makes it text.
    t.a.update_visit(&visit, &edit("家长反映：孩子作业习惯需要关注。已联系班主任。")).unwrap();
    sync_pair(&t.a, &t.b);
    assert_eq!(t.b.visit(&visit).unwrap().notes, "家长反映：孩子作业习惯需要关注。已联系班主任。");
}

#[test]
fn delete_is_soft_restorable_and_a_concurrent_edit_is_kept_inside_the_deleted_visit() {
    let t = two_phones();
    let visit = t.a.record_visit(&new_visit(&t.household, 1_000, "初次走访")).unwrap().id;
    sync_pair(&t.a, &t.b);
    let deleted = t.a.delete_visit(&visit).unwrap();
    let stamp = deleted.deleted.clone().expect("a deleted visit says who deleted it");
    assert_eq!((stamp.member_id.as_str(), stamp.device_id.as_str()), ("m-zhang", "a-device"));
    t.b.update_visit(&visit, &VisitUpdate { mode: Some(VisitMode::Phone), ..Default::default() }).unwrap();
    sync_pair(&t.a, &t.b);
    for r in [&t.a, &t.b] {
        let v = r.visit(&visit).unwrap();
        assert!(v.deleted.is_some(), "rule: the delete stands");
        assert_eq!(v.mode, VisitMode::Phone, "rule: the concurrent edit is kept");
        assert_eq!(r.list_households().unwrap()[0].visit_count, 0, "deleted visits are not counted");
    }
    t.b.restore_visit(&visit).unwrap();
    sync_pair(&t.a, &t.b);
    for r in [&t.a, &t.b] {
        let v = r.visit(&visit).unwrap();
        assert!(v.deleted.is_none());
        assert_eq!(v.mode, VisitMode::Phone);
        assert_eq!(r.list_households().unwrap()[0].visit_count, 1);
    }
}

#[test]
fn fields_written_by_a_newer_app_version_are_preserved() {
    let dir = tempfile::tempdir().unwrap();
    let old = replica(&dir, "old", "m-old");
    // A newer app version writes a field this version does not know.
    let newer_actor = automerge::ActorId::random();
    let author = Author { member_id: "m-new".into(), device_id: "new-device".into() };
    let mut doc = HouseholdDocument::create(&newer_actor, &author, 1_000, &new_household("m-old")).unwrap();
    let household = doc.id().to_string();
    let before = doc.heads();
    let mut am = automerge::AutoCommit::load(&doc.save()).unwrap().with_actor(newer_actor.clone());
    {
        use automerge::transaction::Transactable;
        use automerge::ReadDoc;
        let (_, h) = am.get(automerge::ROOT, "household").unwrap().unwrap();
        am.put(&h, "wechat_id", "wang_family").unwrap();
        am.put(automerge::ROOT, "schema_version", 2u64).unwrap();
        am.commit();
    }
    let changes: Vec<Vec<u8>> = am.get_changes(&[]).iter().map(|c| c.raw_bytes().to_vec()).collect();
    let _ = before;
    old.import_changes(&[HouseholdChanges { household_id: household.clone(), changes }]).unwrap();
    // The old version edits the same record, then sends it on.
    old.update_household(&household, &HouseholdUpdate { address: Some("新地址".into()), ..Default::default() })
        .unwrap();
    let peer = replica(&dir, "peer", "m-peer");
    send(&old, &peer);
    let json = peer.household_json(&household).unwrap();
    assert_eq!(json["household"]["wechat_id"], "wang_family");
    assert_eq!(json["household"]["address"], "新地址");
    assert_eq!(json["schema_version"], 2);
}
