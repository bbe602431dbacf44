//! Whose records a member may change, real processes. Two members share a household; m1
//! records a visit and raises an issue. m2 may not rewrite m1's visit: not through the
//! app (m2's phone refuses the edit once a sync told it m2 is a member; before, or after
//! a change of role it has not heard of, the server holds it), and not with changes
//! crafted to get round the check (joining the visit's
//! visitors, replacing the visit's map with one recorded under m2's id, or creating
//! another record at its key concurrently), nor replace m1's issue with one raised by m2,
//! nor change or replace the issue's comments, nor add one, raise an issue or delete a
//! visit under m1's name, nor change who created the household.
//! Each such change is quarantined with its reason, and m1's records stay as m1 wrote
//! them, on the server and on every phone. What members may do still merges: m2 edits a
//! visit m1 recorded with m2 among its visitors, comments on m1's issue and moves it on,
//! and m1 edits the visit m1 recorded.

mod support;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Change, ObjId, ObjType, ReadDoc, ROOT};
use doorstep_core::sync::protocol::{self, Outcome, Position, PushedChange, SyncRequest, SyncResponse};
use doorstep_core::{Error, IssueStatus, Role, VisitUpdate};
use support::*;

/// A new device of `member` asks for everything (protocol level): its token, its
/// position, and `household` as it received it, saved.
fn household_as_received(district: &District, member: &str, household: &str) -> (String, Position, Vec<u8>) {
    let (token, answer, mut doc) = first_sync(district, member, household);
    (token, answer.position, doc.save())
}

/// A forger's copy of a saved household, writing as a new actor (a new phone).
fn forger(saved: &[u8], actor: ActorId) -> AutoCommit {
    AutoCommit::load(saved).expect("the household loads").with_actor(actor)
}

fn map(doc: &AutoCommit, obj: &ObjId, key: &str) -> ObjId {
    match doc.get(obj, key).unwrap() {
        Some((automerge::Value::Object(_), id)) => id,
        other => panic!("{key} is not an object: {other:?}"),
    }
}

/// The change the forger's edits made.
fn last_change(doc: &mut AutoCommit) -> Change {
    doc.commit();
    doc.get_last_local_change().expect("the forger made a change")
}

/// Push one change to `household` with `token`; what the server made of it.
fn push(district: &District, token: &str, position: &Position, household: &str, change: &Change) -> Outcome {
    let pushed = vec![PushedChange { household_id: household.into(), bytes: change.raw_bytes().to_vec() }];
    let request = SyncRequest::new(Some(position.clone()), pushed);
    let (status, body) = raw_sync_bytes(&district.server.url, Some(token), protocol::encode(&request));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut answer = SyncResponse::decode(&body, 64 << 20).expect("a sync answer");
    assert_eq!(answer.acks.len(), 1);
    answer.acks.pop().unwrap().outcome
}

fn assert_held(outcome: Outcome, what: &str, because: &str) {
    match outcome {
        Outcome::Quarantined { reason } => assert!(reason.contains(because), "{what}: {reason}"),
        other => panic!("{what}: {other:?}, expected held because {because}"),
    }
}

/// A new record's map at `key` under `records`, with its stamp (`stamp`: "recorded",
/// "raised" or "by") naming `by` as who made it.
fn put_record(doc: &mut AutoCommit, records: &ObjId, key: &str, (stamp, by): (&str, &str), fields: &[(&str, &str)]) {
    let record = doc.put_object(records, key, ObjType::Map).unwrap();
    doc.put(&record, "id", key).unwrap();
    for (field, value) in fields {
        doc.put(&record, *field, *value).unwrap();
    }
    let stamp = doc.put_object(&record, stamp, ObjType::Map).unwrap();
    doc.put(&stamp, "member", by).unwrap();
    doc.put(&stamp, "device", "d-forged").unwrap();
    doc.put(&stamp, "at", 5_000_i64).unwrap();
}

#[test]
fn a_member_cannot_rewrite_or_replace_another_members_records() {
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1", "m2"]);
    let h = admin.household("共", "c1", "b1", &["m1", "m2"]);

    // m2's forger takes the household before m1 recorded anything (for a concurrent record).
    let (_, _, before_visit) = household_as_received(&district, "m2", &h);

    let p1 = district.phone("p1", "m1");
    p1.sync(&district.server).unwrap();
    let visit = p1.replica.record_visit(&new_visit(&h, 1_000, "m1 记录的走访")).unwrap();
    let issue = p1.replica.raise_issue(&new_issue(&h, "m1 提出的问题")).unwrap();
    let mut shared = new_visit(&h, 2_000, "m1 与 m2 一同走访");
    shared.visitors = vec!["m1".into(), "m2".into()];
    let shared = p1.replica.record_visit(&shared).unwrap();
    p1.replica.comment_on_issue(&issue.id, "m1 的跟进意见").unwrap();
    let r = p1.sync(&district.server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (4, 0), "{r:?}");

    // Through the app: m2 edits the visit m1 recorded with m2 among its visitors
    // (merged); m1's own visit, further down, is refused on m2's phone.
    let p2 = district.phone("p2", "m2");
    p2.sync(&district.server).unwrap();
    assert_eq!(p2.replica.role(), Some(Role::Member));
    let joint = VisitUpdate { notes: Some("m2 补充的共同走访记录".into()), ..Default::default() };
    p2.replica.update_visit(&shared.id, &joint).unwrap();
    // m2 follows m1's issue up: a comment and a status move, both m2's own.
    p2.replica.comment_on_issue(&issue.id, "m2 已联系学校").unwrap();
    p2.replica.transition_issue(&issue.id, &IssueStatus::Acknowledged, "已受理").unwrap();
    let r = p2.sync(&district.server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (3, 0), "{r:?}");
    let rewrite = VisitUpdate { notes: Some("m2 改写的记录".into()), ..Default::default() };
    let refused = p2.replica.update_visit(&visit.id, &rewrite).unwrap_err();
    assert_eq!(
        refused,
        Error::NotAllowed {
            reason: format!("不能修改其他党员的走访记录 / cannot change visit {}, recorded by another member", visit.id)
        }
    );
    let refused = p2.replica.set_member_assigned(&h, "m1", false).unwrap_err();
    assert!(matches!(&refused, Error::NotAllowed { reason } if reason.contains("assigned_members")), "{refused}");
    assert!(p2.replica.pending_changes().unwrap().is_empty(), "nothing waits for the server");
    assert_eq!(p2.replica.visit(&visit.id).unwrap().notes, "m1 记录的走访");
    assert_eq!(p2.replica.household(&h).unwrap().assigned_members.len(), 2);
    // So nothing holds m2's later changes to the household back.
    p2.replica.record_visit(&new_visit(&h, 3_000, "m2 自己的走访")).unwrap();
    let r = p2.sync(&district.server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (1, 0), "{r:?}");

    // Crafted, each from a new actor, on the household as m2's device received it.
    let (token, position, saved) = household_as_received(&district, "m2", &h);

    // Joining the visit's visitors, and rewriting it in the same change.
    let mut doc = forger(&saved, ActorId::random());
    let record = map(&doc, &map(&doc, &ROOT, "visits"), &visit.id);
    let visitors = map(&doc, &record, "visitors");
    let n = doc.length(&visitors);
    doc.insert(&visitors, n, "m2").unwrap();
    doc.put(&record, "notes", "m2 加入走访人后改写的记录").unwrap();
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "joining the visitors and rewriting", "who took part in visit");

    // Joining the visit's visitors alone (to rewrite it later).
    let mut doc = forger(&saved, ActorId::random());
    let record = map(&doc, &map(&doc, &ROOT, "visits"), &visit.id);
    let visitors = map(&doc, &record, "visitors");
    doc.insert(&visitors, 0, "m2").unwrap();
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "joining the visitors", "who took part in visit");

    // Another record at the visit's key, made concurrently with m1's. Made twice in the
    // change, so that the second's operation number is past m1's and Automerge shows it
    // in place of m1's.
    let mut doc = forger(&before_visit, ActorId::random());
    let visits = map(&doc, &ROOT, "visits");
    let filler: Vec<(String, &str)> = (0..40).map(|i| (format!("f{i}"), "")).collect();
    let filler: Vec<(&str, &str)> = filler.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    put_record(&mut doc, &visits, &visit.id, ("recorded", "m2"), &filler);
    put_record(&mut doc, &visits, &visit.id, ("recorded", "m2"), &[("notes", "m2 并发写入的记录"), ("mode", "in_person")]);
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "a concurrent record at the visit's key", "already holds a record");

    // Replacing the visit's map with one recorded by m2.
    let mut doc = forger(&saved, ActorId::random());
    let visits = map(&doc, &ROOT, "visits");
    put_record(&mut doc, &visits, &visit.id, ("recorded", "m2"), &[("notes", "m2 替换的记录"), ("mode", "in_person")]);
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "replacing the visit", "already holds a record");

    // Replacing m1's issue with one raised by m2.
    let mut doc = forger(&saved, ActorId::random());
    let issues = map(&doc, &ROOT, "issues");
    put_record(&mut doc, &issues, &issue.id, ("raised", "m2"), &[("title", "m2 替换的问题"), ("category", "enrolment")]);
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "replacing the issue", "already holds a record");

    // An issue's history: m2 rewrites m1's comment, replaces its comments, adds one
    // under m1's name; raises a new issue under m1's name.
    let comment_of_m1 = p1.replica.issue(&issue.id).unwrap().comments[0].id.clone();
    let mut doc = forger(&saved, ActorId::random());
    let record = map(&doc, &map(&doc, &ROOT, "issues"), &issue.id);
    let comment = map(&doc, &map(&doc, &record, "comments"), &comment_of_m1);
    doc.put(&comment, "text", "m2 改写的意见").unwrap();
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "rewriting m1's comment", "cannot be changed once made");

    let mut doc = forger(&saved, ActorId::random());
    let record = map(&doc, &map(&doc, &ROOT, "issues"), &issue.id);
    doc.put_object(&record, "comments", ObjType::Map).unwrap();
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "replacing the comments", "cannot be changed once made");

    let mut doc = forger(&saved, ActorId::random());
    let comments = map(&doc, &map(&doc, &map(&doc, &ROOT, "issues"), &issue.id), "comments");
    put_record(&mut doc, &comments, "c-forged", ("by", "m1"), &[("text", "冒名的意见")]);
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "a comment under m1's name", "under your own id");

    let mut doc = forger(&saved, ActorId::random());
    let issues = map(&doc, &ROOT, "issues");
    put_record(&mut doc, &issues, "i-forged", ("raised", "m1"), &[("title", "冒名提出的问题"), ("category", "enrolment")]);
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "an issue raised under m1's name", "must be raised under your own id");

    // Deleting the shared visit (m2 took part) under m1's name; rewriting who created
    // the household.
    let mut doc = forger(&saved, ActorId::random());
    let record = map(&doc, &map(&doc, &ROOT, "visits"), &shared.id);
    let deleted = doc.put_object(&record, "deleted", ObjType::Map).unwrap();
    doc.put(&deleted, "member", "m1").unwrap();
    doc.put(&deleted, "device", "d-forged").unwrap();
    doc.put(&deleted, "at", 5_000_i64).unwrap();
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "a deletion under m1's name", "must be deleted under your own id");

    let mut doc = forger(&saved, ActorId::random());
    let created = map(&doc, &map(&doc, &ROOT, "household"), "created");
    doc.put(&created, "member", "m2").unwrap();
    let outcome = push(&district, &token, &position, &h, &last_change(&mut doc));
    assert_held(outcome, "who created the household", "members cannot change household created");

    // m1 still edits the visit m1 recorded.
    let own = VisitUpdate { notes: Some("m1 补充的记录".into()), ..Default::default() };
    p1.replica.update_visit(&visit.id, &own).unwrap();
    let r = p1.sync(&district.server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (1, 0), "{r:?}");
    assert_eq!(admin.quarantine(Some("held")).len(), 11);

    // m1's records stay as m1 wrote them: on a new phone, and in the read API.
    let p3 = district.phone("p3", "m1");
    p3.sync(&district.server).unwrap();
    let seen = p3.replica.visit(&visit.id).unwrap();
    assert_eq!((seen.notes.as_str(), seen.recorded.member_id.as_str()), ("m1 补充的记录", "m1"));
    assert_eq!(seen.visitors, vec!["m1".to_string()]);
    let joint_seen = p3.replica.visit(&shared.id).unwrap();
    assert_eq!((joint_seen.notes.as_str(), joint_seen.deleted), ("m2 补充的共同走访记录", None));
    let seen = p3.replica.issue(&issue.id).unwrap();
    assert_eq!((seen.title.as_str(), seen.raised.member_id.as_str()), ("m1 提出的问题", "m1"));
    let comments: Vec<(&str, &str)> = seen.comments.iter().map(|c| (c.text.as_str(), c.by.member_id.as_str())).collect();
    assert_eq!(comments.len(), 2);
    assert!(comments.contains(&("m1 的跟进意见", "m1")) && comments.contains(&("m2 已联系学校", "m2")), "{comments:?}");
    assert_eq!((seen.status, seen.transitions[0].by.member_id.as_str()), (IssueStatus::Acknowledged, "m2"));
    assert_eq!(p3.replica.issues(&h).unwrap().len(), 1, "no issue raised under m1's name");
    let rows = admin.get_ok("/v1/visits?member=m1&community=c1");
    let row = rows.as_array().unwrap().iter().find(|v| v["id"] == visit.id.as_str()).expect("m1's visit");
    assert_eq!((row["recorded_by"].as_str(), &row["visitors"]), (Some("m1"), &serde_json::json!(["m1"])));
    assert_no_panic(&district.server.log);
}

/// A phone checks its member's edits by the role the server gave at the last sync. A
/// coordinator's phone may edit a member's visit; once the admin makes the coordinator a
/// member, the edit the phone still allowed offline is held by the server, with its reason
/// on the phone, and the phone, now knowing, refuses the next one itself.
#[test]
fn a_phone_checks_edits_by_the_role_the_server_gave_at_the_last_sync() {
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1"]);
    admin.coordinator("sec", &["b1"], &[]);
    let h = admin.household("共", "c1", "b1", &["m1"]);
    let p1 = district.phone("p1", "m1");
    p1.sync(&district.server).unwrap();
    let visit = p1.replica.record_visit(&new_visit(&h, 1_000, "m1 记录的走访")).unwrap();
    assert_eq!(p1.sync(&district.server).unwrap().accepted, 1);

    let sec = district.phone("sec", "sec");
    assert_eq!(sec.replica.role(), None, "unknown before the first sync");
    sec.sync(&district.server).unwrap();
    assert_eq!(sec.replica.role(), Some(Role::Coordinator));
    let edit = |notes: &str| VisitUpdate { notes: Some(notes.into()), ..Default::default() };
    sec.replica.update_visit(&visit.id, &edit("书记补充的记录")).unwrap();
    let r = sec.sync(&district.server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (1, 0), "a coordinator may: {r:?}");

    // The admin makes sec a member; sec's phone, offline, has not heard.
    admin.ok("/v1/admin/members", serde_json::json!({"id": "sec", "name": "sec", "role": "member", "branch_id": "b1"}));
    admin.assign(&h, "sec", true);
    sec.replica.update_visit(&visit.id, &edit("离线时的修改")).unwrap();
    let r = sec.sync(&district.server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (0, 1), "{r:?}");
    let pending = sec.replica.pending_changes().unwrap();
    let reason = pending[0].quarantine_reason.as_deref().unwrap();
    assert!(reason.contains("recorded by another member"), "{reason}");
    assert_eq!(sec.replica.role(), Some(Role::Member));

    let refused = sec.replica.update_visit(&visit.id, &edit("再次修改")).unwrap_err();
    assert!(matches!(&refused, Error::NotAllowed { reason } if reason.contains("recorded by another member")), "{refused}");
    assert_eq!(sec.replica.pending_changes().unwrap().len(), 1, "only the held edit waits");
    // The phone still knows once the app restarts.
    let Phone { replica, device_id, .. } = sec;
    drop(replica);
    let reopened = doorstep_core::Replica::open(district.dir.path().join("sec.sqlite3"), "sec", &device_id).unwrap();
    assert_eq!(reopened.role(), Some(Role::Member));
    assert!(reopened.update_visit(&visit.id, &edit("重启后的修改")).is_err());

    p1.sync(&district.server).unwrap();
    assert_eq!(p1.replica.visit(&visit.id).unwrap().notes, "书记补充的记录");
    assert_no_panic(&district.server.log);
}
