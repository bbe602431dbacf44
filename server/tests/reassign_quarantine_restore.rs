//! Real processes:
//! (a) a household reassigned from m1 to m2 reaches m2's next sync and leaves m1's phone
//!     after m1's pending changes were taken;
//! (b) quarantine and release: a member's change to a coordinator field is quarantined
//!     with a reason (made on a phone behind on the member's role: it still thinks the
//!     member a coordinator, so it let the change through); the same device's later
//!     changes to that household are quarantined too ("depends on quarantined change")
//!     and are released with it, each checked like a fresh push; discarding one discards its dependents, the phone is told and rebuilds
//!     the household from the server;
//! (b') one request with valid and invalid changes to the same household: the valid ones
//!     are merged, the invalid one and what depends on it held;
//! (c) restore from an older backup: phones' positions are not recognised, a full
//!     reconciliation by heads loses nothing on either side, even when other phones pushed
//!     to the restored server first; a change quarantined after the backup is held again;
//! (d) a phone restored from its own older backup gets back what it sent since;
//! (e) a visit recorded while the answer removing its household was on its way is taken
//!     before the household leaves the phone, also when the next answer is lost or the
//!     visit waits behind other changes;
//! (f) households that left a phone's scope in a restored backup take the phone's
//!     changes the server lost, held for an admin, before they leave it;
//! (g) a reconciliation pushes back only what the server lacks, also when both sides
//!     changed the household since the backup;
//! (h) a change discarded after its household left the phone is dropped, and the phone
//!     stops asking for the household;
//! (i) a phone restored from its own backup, told so by the app, records before its first
//!     sync under a new actor: both lives' visits merge;
//! (j) a change made on a held change before its discard was heard goes with it;
//! (k) a change held for a dependency the restored server lost merges once that arrives.

mod support;

use doorstep_core::{Error, HouseholdUpdate};
use serde_json::Value;
use support::*;

fn household_row(admin: &Admin, id: &str) -> Value {
    let list = admin.get_ok("/v1/households");
    list.as_array().unwrap().iter().find(|h| h["id"] == id).cloned().unwrap_or_else(|| panic!("{id} in {list}"))
}

#[test]
fn reassigned_household_moves_after_the_previous_phone_handed_over_its_changes() {
    let district = District::start();
    let (server, admin) = (&district.server, district.admin());
    admin.branch_b1(&["c1"], &["m1", "m2"]);
    let moving = admin.household("搬", "c1", "b1", &["m1"]);
    let staying = admin.household("留", "c1", "b1", &["m1"]);
    let (p1, p2) = (district.phone("m1", "m1"), district.phone("m2", "m2"));
    p1.sync(server).unwrap();
    p2.sync(server).unwrap();
    assert_eq!(p1.household_ids(), {
        let mut v = vec![moving.clone(), staying.clone()];
        v.sort();
        v
    });
    assert!(p2.household_ids().is_empty());

    // m1 records offline; meanwhile the admin hands the household to m2.
    let visit = p1.replica.record_visit(&new_visit(&moving, 1_000, "交接前的走访")).unwrap().id;
    let issue = p1.replica.raise_issue(&new_issue(&moving, "交接前的问题")).unwrap().id;
    to_m2(&admin, &moving);

    // m2's next sync brings the household (without m1's offline records yet).
    let r = p2.sync(server).unwrap();
    assert!(r.households_changed.contains(&moving), "{r:?}");
    assert_eq!(p2.household_ids(), vec![moving.clone()]);
    assert!(p2.visit_ids(&moving).is_empty());

    // m1's next sync hands over the pending changes, then the household leaves the phone.
    let r = p1.sync(server).unwrap();
    assert_eq!(r.accepted, 2, "{r:?}");
    assert_eq!(r.households_removed, vec![moving.clone()], "{r:?}");
    assert!(p1.replica.pending_changes().unwrap().is_empty(), "nothing was left behind");
    assert_eq!(p1.household_ids(), vec![staying.clone()]);
    assert!(matches!(p1.replica.household(&moving), Err(Error::NotFound { .. })));
    assert!(matches!(p1.replica.visit(&visit), Err(Error::NotFound { .. })));
    assert!(admin.visit_ids().contains(&visit), "the visit reached the server");
    assert_eq!(household_row(&admin, &moving)["assigned_members"], serde_json::json!(["m2"]));

    // m2 receives them; a further sync of m1 changes nothing.
    p2.sync(server).unwrap();
    assert_eq!(p2.visit_ids(&moving), vec![visit.clone()]);
    assert_eq!(p2.replica.issue(&issue).unwrap().title, "交接前的问题");
    let r = p1.sync(server).unwrap();
    assert!(r.households_removed.is_empty() && r.households_changed.is_empty(), "{r:?}");
    assert_eq!(p1.household_ids(), vec![staying]);
    // The household comes back to m1 whole if assigned again.
    admin.assign(&moving, "m1", true);
    p1.sync(server).unwrap();
    assert_eq!(p1.visit_ids(&moving), vec![visit]);
    assert_eq!(p1.replica.household_json(&moving).unwrap(), {
        p2.sync(server).unwrap();
        p2.replica.household_json(&moving).unwrap()
    });
    server.assert_sound();
}

#[test]
fn one_sync_merges_the_valid_changes_to_a_household_and_holds_the_invalid_ones() {
    // The server checks a request's changes household by household against one working
    // copy: a bad change in the middle must not take the valid ones before it, nor
    // another household's, with it, and what depends on it is held too.
    let mut district = District::start();
    let (server, admin) = (&district.server, district.admin());
    admin.branch_b1(&["c1", "c2"], &["m1"]);
    let h = admin.household("王", "c1", "b1", &["m1"]);
    let other = admin.household("李", "c1", "b1", &["m1"]);
    let p1 = district.phone("m1", "m1");
    behind_on_role(&admin, &p1, "b1");

    let first = p1.replica.record_visit(&new_visit(&h, 1_000, "第一次走访")).unwrap().id;
    let elsewhere = p1.replica.record_visit(&new_visit(&other, 1_500, "另一户")).unwrap().id;
    let second = p1.replica.record_visit(&new_visit(&h, 2_000, "第二次走访")).unwrap().id;
    p1.replica
        .update_household(&h, &HouseholdUpdate { community_id: Some("c2".into()), ..Default::default() })
        .unwrap();
    let after_bad = p1.replica.record_visit(&new_visit(&h, 3_000, "之后的走访")).unwrap().id;
    let r = p1.sync(server).unwrap();
    assert_eq!((r.round_trips, r.accepted, r.quarantined), (1, 3, 2), "one request: {r:?}");

    let visits = admin.visit_ids();
    for id in [&first, &second, &elsewhere] {
        assert!(visits.contains(id), "{id} merged and projected: {visits:?}");
    }
    assert!(!visits.contains(&after_bad), "{visits:?}");
    assert_eq!(household_row(&admin, &h)["community_id"], "c1");
    let pending = p1.replica.pending_changes().unwrap();
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(pending[0].quarantine_reason.as_deref().unwrap().contains("community_id"), "{pending:?}");
    assert!(pending[1].quarantine_reason.as_deref().unwrap().contains("depends on quarantined change"), "{pending:?}");
    // The stored document holds exactly the merged changes: after a restart (documents
    // loaded from the store, not from memory) a new phone of m1 receives them.
    drop(admin);
    district.restart();
    let fresh = district.phone("m1-new", "m1");
    fresh.sync(&district.server).unwrap();
    assert_eq!(fresh.visit_ids(&h), vec![first, second]);
    assert_eq!(fresh.visit_ids(&other), vec![elsewhere]);
}

#[test]
fn quarantined_changes_hold_their_dependents_and_release_or_discard_them_together() {
    let district = District::start();
    let (server, admin) = (&district.server, district.admin());
    admin.branch_b1(&["c1", "c2"], &["m1", "m2"]);
    admin.branch("b2");
    let h = admin.household("王", "c1", "b1", &["m1", "m2"]);
    let (p1, p2) = (district.phone("m1", "m1"), district.phone("m2", "m2"));
    behind_on_role(&admin, &p1, "b1");
    p2.sync(server).unwrap();

    // ----- release ------------------------------------------------------------------------
    // A member moves the household to another community: only coordinators may. (m1's
    // phone still thinks m1 a coordinator.)
    p1.replica
        .update_household(&h, &HouseholdUpdate { community_id: Some("c2".into()), ..Default::default() })
        .unwrap();
    let r = p1.sync(server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (0, 1), "{r:?}");
    let pending = p1.replica.pending_changes().unwrap();
    assert_eq!(pending.len(), 1);
    let first = pending[0].change_hash.clone();
    assert!(pending[0].quarantine_reason.as_deref().unwrap().contains("community_id"), "{pending:?}");

    // Later changes of the same device to the household depend on it: held too, each
    // in its own sync, the second depending on the first.
    let va = p1.replica.record_visit(&new_visit(&h, 1_000, "之后的走访一")).unwrap().id;
    let r = p1.sync(server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (0, 1), "{r:?}");
    let vb = p1.replica.record_visit(&new_visit(&h, 2_000, "之后的走访二")).unwrap().id;
    let r = p1.sync(server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (0, 1), "{r:?}");
    let pending = p1.replica.pending_changes().unwrap();
    assert_eq!(pending.len(), 3, "the phone keeps all three: {pending:?}");
    assert!(
        pending[1].quarantine_reason.as_deref().unwrap().contains(&format!("depends on quarantined change {first}")),
        "{pending:?}"
    );
    assert!(pending[2].quarantine_reason.as_deref().unwrap().contains("depends on quarantined change"), "{pending:?}");
    let held = admin.quarantine(Some("held"));
    assert_eq!(held.len(), 3, "{held:?}");
    assert!(held.iter().all(|q| q["household_id"] == h.as_str() && q["member_id"] == "m1"));
    // Nothing of it is merged: not on the server, not on m2's phone.
    let visits = admin.visit_ids();
    assert!(!visits.contains(&va) && !visits.contains(&vb));
    assert_eq!(household_row(&admin, &h)["community_id"], "c1");
    p2.sync(server).unwrap();
    assert!(p2.visit_ids(&h).is_empty());
    assert_eq!(p2.replica.household(&h).unwrap().community_id, "c1");

    // The admin releases the first: its dependents are released with it.
    admin.ok(&format!("/v1/admin/quarantine/{first}/release"), serde_json::json!({}));
    let all = admin.quarantine(None);
    assert!(all.iter().all(|q| q["status"] == "released"), "released together: {all:?}");
    assert_eq!(household_row(&admin, &h)["community_id"], "c2");
    let visits = admin.visit_ids();
    assert!(visits.contains(&va) && visits.contains(&vb), "{visits:?}");
    // The phone is told; m2 receives everything; both converge.
    let r = p1.sync(server).unwrap();
    assert_eq!(r.accepted, 3, "{r:?}");
    assert!(p1.replica.pending_changes().unwrap().is_empty());
    p2.sync(server).unwrap();
    assert_eq!(p2.visit_ids(&h), vec![va.clone(), vb.clone()]);
    assert_eq!(p2.replica.household(&h).unwrap().community_id, "c2");
    assert_eq!(p1.replica.household_json(&h).unwrap(), p2.replica.household_json(&h).unwrap());

    // ----- release checks the dependents --------------------------------------------------
    // A dependent that breaks a rule of its own is not merged by the release: it stays
    // held, now with its own reason. (The sync told m1's phone that m1 is a member: it
    // is made to fall behind again.)
    behind_on_role(&admin, &p1, "b1");
    p1.replica
        .update_household(
            &h,
            &HouseholdUpdate { branch_id: Some("b2".into()), notes: Some("换支部".into()), ..Default::default() },
        )
        .unwrap();
    let valid_later = p1.replica.record_visit(&new_visit(&h, 3_000, "合规的走访")).unwrap().id;
    p1.replica.update_household(&h, &HouseholdUpdate { archived: Some(true), ..Default::default() }).unwrap();
    let r = p1.sync(server).unwrap();
    assert_eq!(r.quarantined, 3, "{r:?}");
    let pending = p1.replica.pending_changes().unwrap();
    let (branch_edit, archive_edit) = (pending[0].change_hash.clone(), pending[2].change_hash.clone());
    admin.ok(&format!("/v1/admin/quarantine/{branch_edit}/release"), serde_json::json!({}));
    let status = |hash: &str| {
        admin.quarantine(None).into_iter().find(|q| q["hash"] == hash).unwrap_or_else(|| panic!("{hash} listed"))
    };
    assert_eq!(status(&branch_edit)["status"], "released");
    assert!(admin.visit_ids().contains(&valid_later), "the valid dependent is released with it");
    let still = status(&archive_edit);
    assert_eq!(still["status"], "held", "a dependent breaking a rule stays held: {still}");
    assert!(still["reason"].as_str().unwrap().contains("archived"), "with its own reason: {still}");
    assert_eq!(household_row(&admin, &h)["archived"], false);
    let r = p1.sync(server).unwrap();
    assert_eq!(r.accepted, 2, "{r:?}");
    assert_eq!(p1.replica.pending_changes().unwrap().len(), 1);
    admin.ok(&format!("/v1/admin/quarantine/{archive_edit}/discard"), serde_json::json!({}));
    let r = p1.sync(server).unwrap();
    assert_eq!(r.discarded, 1, "{r:?}");
    assert!(p1.replica.pending_changes().unwrap().is_empty());
    assert!(!p1.replica.household(&h).unwrap().archived);

    // ----- discard ------------------------------------------------------------------------
    // Offline: a forbidden edit, then a visit that depends on it; both go in one request.
    // (Not the archive edit again: made in the same second on the rebuilt document, it
    // would be the very change discarded above, the same bytes and hash, and the server
    // would answer it Discarded again.) The household is in branch b2 now.
    behind_on_role(&admin, &p1, "b2");
    p1.replica
        .update_household(&h, &HouseholdUpdate { community_id: Some("c1".into()), ..Default::default() })
        .unwrap();
    let vc = p1.replica.record_visit(&new_visit(&h, 4_000, "被丢弃的走访")).unwrap().id;
    let r = p1.sync(server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (0, 2), "{r:?}");
    let pending = p1.replica.pending_changes().unwrap();
    let bad = pending[0].change_hash.clone();
    assert!(pending[1].quarantine_reason.as_deref().unwrap().contains(&bad), "{pending:?}");
    admin.ok(&format!("/v1/admin/quarantine/{bad}/discard"), serde_json::json!({}));
    assert_eq!(status(&bad)["status"], "discarded");
    assert_eq!(status(&pending[1].change_hash)["status"], "discarded", "the dependent is discarded with it");
    // Releasing or discarding again is refused.
    let (s, _) =
        post(&format!("{}/v1/admin/quarantine/{bad}/release", server.url), &admin.token, serde_json::json!({}));
    assert_eq!(s, 400);

    // The phone is told (ack Discarded), drops its copy and rebuilds the household from
    // the server's: the discarded changes are gone there, nothing else is.
    let r = p1.sync(server).unwrap();
    assert_eq!(r.discarded, 2, "{r:?}");
    assert!(p1.replica.pending_changes().unwrap().is_empty());
    let rebuilt = p1.replica.household(&h).unwrap();
    assert_eq!((rebuilt.community_id.as_str(), rebuilt.archived), ("c2", false));
    assert_eq!(p1.visit_ids(&h), vec![va.clone(), vb.clone(), valid_later.clone()]);
    assert!(matches!(p1.replica.visit(&vc), Err(Error::NotFound { .. })));
    assert!(!admin.visit_ids().contains(&vc));
    p2.sync(server).unwrap();
    assert_eq!(p1.replica.household_json(&h).unwrap(), p2.replica.household_json(&h).unwrap());
    // The rebuilt household takes new changes normally.
    let vd = p1.replica.record_visit(&new_visit(&h, 5_000, "重建之后")).unwrap().id;
    let r = p1.sync(server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (1, 0), "{r:?}");
    assert!(admin.visit_ids().contains(&vd));
    server.assert_sound();
}

#[test]
fn restoring_an_older_backup_falls_back_to_a_reconciliation_that_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let backup = dir.path().join("backup.sqlite3");
    let admin_token = create_admin(&data);
    let mut server = Server::start(&data);
    let (shared, own3, own1) = {
        let admin = Admin { server: &server, token: admin_token.clone() };
        admin.branch("b1");
        admin.community("c1");
        admin.community("c2");
        for m in ["m1", "m2", "m3"] {
            admin.member(m, "b1");
        }
        (
            admin.household("共", "c1", "b1", &["m1", "m2"]),
            admin.household("三", "c1", "b1", &["m3"]),
            admin.household("一", "c1", "b1", &["m1"]),
        )
    };
    let admin = Admin { server: &server, token: admin_token.clone() };
    let phones: Vec<Phone> = ["m1", "m2", "m3"].iter().map(|m| Phone::new(dir.path(), m, m, admin.device(m))).collect();
    drop(admin);
    let (p1, p2, p3) = (&phones[0], &phones[1], &phones[2]);
    for p in &phones {
        p.sync(&server).unwrap();
    }
    let before_backup = p1.replica.record_visit(&new_visit(&shared, 1_000, "备份前")).unwrap().id;
    p1.sync(&server).unwrap();
    p2.sync(&server).unwrap();

    // Time T: the backup, taken while the server runs.
    let (ok, _, err) = command(&["backup", "--data-dir", arg(&data), arg(&backup)]);
    assert!(ok, "{err}");

    // After T: acknowledged changes the backup does not hold.
    let after1 = p1.replica.record_visit(&new_visit(&shared, 2_000, "备份后一")).unwrap().id;
    let r = p1.sync(&server).unwrap();
    assert_eq!(r.accepted, 1);
    let after2 = p2.replica.record_visit(&new_visit(&shared, 3_000, "备份后二")).unwrap().id;
    p2.replica
        .update_household(&shared, &HouseholdUpdate { notes: Some("备份后修改的备注".into()), ..Default::default() })
        .unwrap();
    let r = p2.sync(&server).unwrap();
    assert_eq!(r.accepted, 2);
    p1.sync(&server).unwrap();
    // m1's next change depends on m2's.
    let after3 = p1.replica.record_visit(&new_visit(&shared, 4_000, "备份后三")).unwrap().id;
    p1.sync(&server).unwrap();
    p2.sync(&server).unwrap();
    assert!(p1.replica.pending_changes().unwrap().is_empty() && p2.replica.pending_changes().unwrap().is_empty());
    // And a change quarantined after T (a member may not move a household; m1's phone,
    // behind on m1's role, lets it through).
    behind_on_role(&Admin { server: &server, token: admin_token.clone() }, p1, "b1");
    p1.replica
        .update_household(&own1, &HouseholdUpdate { community_id: Some("c2".into()), ..Default::default() })
        .unwrap();
    assert_eq!(p1.sync(&server).unwrap().quarantined, 1);
    let held_after_t = p1.replica.pending_changes().unwrap();
    assert_eq!(held_after_t.len(), 1);
    let all_after = vec![before_backup.clone(), after1.clone(), after2.clone(), after3.clone()];
    assert_eq!(p1.visit_ids(&shared), all_after);
    assert_eq!(p2.visit_ids(&shared), all_after);

    // The older backup is restored.
    server.kill();
    let (ok, _, err) = command(&["restore", "--data-dir", arg(&data), arg(&backup)]);
    assert!(ok, "{err}");
    server = Server::start(&data);
    let admin = Admin { server: &server, token: admin_token.clone() };
    assert_eq!(admin.visit_ids(), vec![before_backup.clone()], "the restored store is the backup");

    // A phone whose position predates T syncs first and pushes several changes, so the
    // restored change log grows past the positions the other phones hold.
    let own: Vec<String> = (0..8)
        .map(|i| p3.replica.record_visit(&new_visit(&own3, 10_000 + i, &format!("恢复后{i}"))).unwrap().id)
        .collect();
    let r = p3.sync(&server).unwrap();
    assert_eq!(r.accepted, 8, "{r:?}");

    // The phones that synced after T reconcile: they push again what the server lost
    // (m1 first: it relays m2's changes, which wait for m2's phone) and receive what it
    // has.
    for _ in 0..3 {
        for p in [p1, p2, p3] {
            p.sync(&server).unwrap();
        }
    }
    for p in [p2, p3] {
        let pending = p.replica.pending_changes().unwrap();
        assert!(pending.is_empty(), "everything acknowledged again: {pending:?}");
    }
    // The quarantine the backup lacks comes back: the phone still holds the change, the
    // reconciliation has it pushed again, and it is held again with its reason.
    assert_eq!(p1.replica.pending_changes().unwrap(), held_after_t, "m1 still holds only its quarantined change");
    let held = admin.quarantine(Some("held"));
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["hash"], held_after_t[0].change_hash.as_str());
    assert!(held[0]["reason"].as_str().unwrap().contains("community_id"), "{held:?}");
    assert_eq!(household_row(&admin, &own1)["community_id"], "c1");
    let mut expected = all_after.clone();
    expected.extend(own.iter().cloned());
    let mut on_server = admin.visit_ids();
    let total = on_server.len();
    on_server.sort();
    on_server.dedup();
    assert_eq!(on_server.len(), total, "no visit twice");
    expected.sort();
    assert_eq!(on_server, expected, "nothing lost on either side");
    assert_eq!(p1.replica.household_json(&shared).unwrap(), p2.replica.household_json(&shared).unwrap());
    assert_eq!(p1.replica.household(&shared).unwrap().notes, "备份后修改的备注");
    assert_eq!(household_row(&admin, &shared)["visits"], 4);
    assert_eq!(p1.visit_ids(&shared), all_after);
    assert_eq!(p2.visit_ids(&shared), all_after);
    assert_eq!(p3.visit_ids(&own3), own);
    drop(admin);
    server.assert_sound();
}

/// m1's phone on a file the test backs up and restores, as a phone backup would (the
/// phone closed meanwhile).
struct BackedUpPhone<'a> {
    dir: &'a std::path::Path,
    device: (String, String),
}

impl BackedUpPhone<'_> {
    fn open(&self) -> Phone {
        Phone::new(self.dir, "m1", "m1", self.device.clone())
    }

    fn back_up(&self) {
        std::fs::copy(self.dir.join("m1.sqlite3"), self.dir.join("m1-backup.sqlite3")).unwrap();
    }

    fn restore(&self) {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(self.dir.join(format!("m1.sqlite3{suffix}")));
        }
        std::fs::copy(self.dir.join("m1-backup.sqlite3"), self.dir.join("m1.sqlite3")).unwrap();
    }
}

#[test]
fn a_phone_restored_from_its_own_older_backup_gets_back_what_it_sent_since() {
    // The phone's file goes back in time (a restored phone backup); the server still has
    // what the phone sent after that backup, and the phone must get it back, not only
    // other members' changes.
    let district = District::start();
    let (server, admin, dir) = (&district.server, district.admin(), &district.dir);
    admin.branch_b1(&["c1"], &["m1", "m2"]);
    let h = admin.household("王", "c1", "b1", &["m1", "m2"]);
    let m1 = BackedUpPhone { dir: dir.path(), device: admin.device("m1") };

    let p1 = m1.open();
    p1.sync(server).unwrap();
    let before_backup = p1.replica.record_visit(&new_visit(&h, 1_000, "备份之前")).unwrap().id;
    assert_eq!(p1.sync(server).unwrap().accepted, 1);
    drop(p1);
    m1.back_up();

    let p1 = m1.open();
    let after_backup = p1.replica.record_visit(&new_visit(&h, 2_000, "备份之后")).unwrap().id;
    let issue = p1.replica.raise_issue(&new_issue(&h, "入学材料")).unwrap().id;
    assert_eq!(p1.sync(server).unwrap().accepted, 2);
    // More syncs after that, so that the phone's position moves on.
    let p2 = district.phone("m2", "m2");
    p2.sync(server).unwrap();
    let by_m2 = p2.replica.record_visit(&new_visit(&h, 3_000, "另一位党员")).unwrap().id;
    p2.sync(server).unwrap();
    p1.sync(server).unwrap();
    drop(p1);

    // Restore the backup.
    m1.restore();
    let p1 = m1.open();
    assert_eq!(p1.visit_ids(&h), vec![before_backup.clone()], "the backup is older");

    p1.sync(server).unwrap();
    assert_eq!(p1.visit_ids(&h), vec![before_backup.clone(), after_backup.clone(), by_m2.clone()]);
    assert!(p1.replica.issue(&issue).is_ok(), "its own issue came back too");
    let later = p1.replica.record_visit(&new_visit(&h, 4_000, "恢复之后")).unwrap().id;
    assert_eq!(p1.sync(server).unwrap().accepted, 1);
    p2.sync(server).unwrap();
    assert_eq!(p1.replica.household_json(&h).unwrap(), p2.replica.household_json(&h).unwrap());
    let visits = admin.visit_ids();
    for id in [&before_backup, &after_backup, &by_m2, &later] {
        assert!(visits.contains(id), "{id}: {visits:?}");
    }
}

/// A district where m1's household "搬" is about to go to m2, on m1's phone (synced) and
/// m2's (not yet).
fn moving_from_m1() -> (District, String, Phone, Phone) {
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1", "m2"]);
    let moving = admin.household("搬", "c1", "b1", &["m1"]);
    let (p1, p2) = (district.phone("m1", "m1"), district.phone("m2", "m2"));
    p1.sync(&district.server).unwrap();
    (district, moving, p1, p2)
}

/// The admin assigns the household to m2 and releases m1.
fn to_m2(admin: &Admin, household: &str) {
    admin.assign(household, "m2", true);
    admin.assign(household, "m1", false);
}

#[test]
fn a_reassigned_household_stays_until_an_outbox_of_several_requests_was_taken() {
    // The previous member's phone has more changes than one request carries: the
    // household must not leave it before the last of them was pushed (they would be out
    // of scope then, and held in quarantine).
    let (district, moving, p1, p2) = moving_from_m1();
    let (server, admin) = (&district.server, district.admin());
    let visits: Vec<String> = (0..5)
        .map(|i| p1.replica.record_visit(&new_visit(&moving, 1_000 * (i + 1), &format!("离线走访{i}"))).unwrap().id)
        .collect();
    to_m2(&admin, &moving);

    // One change per request.
    let one_at_a_time = doorstep_core::SyncOptions { push_bytes: 1, ..Default::default() };
    let r = p1.sync_with(&server.url, &one_at_a_time).unwrap();
    assert_eq!((r.accepted, r.quarantined), (5, 0), "{r:?}");
    assert!(r.round_trips >= 5, "{r:?}");
    assert_eq!(r.households_removed, vec![moving.clone()], "removed within the same sync, at its end: {r:?}");
    assert!(p1.replica.pending_changes().unwrap().is_empty());
    assert!(admin.quarantine(None).is_empty());
    p2.sync(server).unwrap();
    assert_eq!(p2.visit_ids(&moving), visits);
}

/// Send `request` as `phone`'s next sync request; the server's answer.
fn send(server: &Server, phone: &Phone, request: &doorstep_core::sync::protocol::SyncRequest) -> doorstep_core::sync::protocol::SyncResponse {
    let (status, body) = raw_sync_bytes(&server.url, Some(&phone.token), doorstep_core::sync::protocol::encode(request));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    doorstep_core::sync::protocol::SyncResponse::decode(&body, 64 << 20).expect("a sync answer")
}

#[test]
fn a_change_made_while_the_answer_removing_its_household_was_on_its_way_is_taken_before_it_leaves() {
    // The phone builds its request with nothing to push; the member records a visit while
    // it travels; the answer says the household left the phone's scope.
    let (district, moving, p1, p2) = moving_from_m1();
    let (server, admin) = (&district.server, district.admin());
    to_m2(&admin, &moving);
    let options = doorstep_core::SyncOptions::default();
    let request = p1.replica.sync_request(options.page_bytes, options.push_bytes).unwrap();
    assert!(request.changes.is_empty() && !request.more_to_push);
    let late = p1.replica.record_visit(&new_visit(&moving, 1_000, "请求途中记录")).unwrap().id;
    let answer = send(server, &p1, &request);
    assert_eq!(answer.removed, vec![moving.clone()]);
    let step = p1.replica.apply_sync_response(answer).unwrap();
    assert!(step.households_removed.is_empty() && step.again, "kept for the visit, pushed next: {step:?}");
    assert_eq!(p1.visit_ids(&moving), vec![late.clone()]);

    // The next request pushes it; its answer is lost, and the request is sent again with
    // one more visit the member recorded meanwhile.
    let request = p1.replica.sync_request(options.page_bytes, options.push_bytes).unwrap();
    assert_eq!(request.changes.len(), 1);
    let lost = send(server, &p1, &request);
    assert_eq!(lost.removed, vec![moving.clone()], "taken, then removed again");
    let later = p1.replica.record_visit(&new_visit(&moving, 2_000, "应答丢失后记录")).unwrap().id;
    let r = p1.sync(server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (2, 0), "{r:?}");
    assert_eq!(r.households_removed, vec![moving.clone()], "{r:?}");
    assert!(p1.replica.list_households().unwrap().is_empty(), "it left the phone");
    assert!(p1.replica.pending_changes().unwrap().is_empty());
    assert!(admin.quarantine(None).is_empty(), "{:?}", admin.quarantine(None));
    p2.sync(server).unwrap();
    assert_eq!(p2.visit_ids(&moving), vec![late, later], "the new member has both");
}

#[test]
fn households_that_left_the_scope_in_a_restored_backup_take_the_phones_changes_before_they_leave() {
    // After the backup, a coordinator's scope grew to branch b2 and the coordinator noted
    // something on a b2 household; a b1 household was assigned to m1, who recorded a visit.
    // Both were acknowledged. In the restored store the coordinator's scope is b1 again and
    // the household is not m1's: the phones alone hold those changes, and must not drop
    // them with the households.
    let mut district = District::start();
    let backup = district.dir.path().join("backup.sqlite3");
    let (widened, moving, sec, p1) = {
        let admin = district.admin();
        admin.branch_b1(&["c1"], &["m1", "m2"]);
        admin.branch("b2");
        admin.member("m3", "b2");
        admin.coordinator("sec", &["b1"], &[]);
        let widened = admin.household("扩", "c1", "b2", &["m3"]);
        let moving = admin.household("搬", "c1", "b1", &["m2"]);
        let (sec, p1) = (district.phone("sec", "sec"), district.phone("m1", "m1"));
        sec.sync(&district.server).unwrap();
        p1.sync(&district.server).unwrap();
        (widened, moving, sec, p1)
    };
    let (ok, _, err) = command(&["backup", "--data-dir", arg(&district.data), arg(&backup)]);
    assert!(ok, "{err}");
    let admin = district.admin();
    admin.coordinator("sec", &["b1", "b2"], &[]);
    sec.sync(&district.server).unwrap();
    let noted = HouseholdUpdate { notes: Some("书记备注：备份后".into()), ..Default::default() };
    sec.replica.update_household(&widened, &noted).unwrap();
    assert_eq!(sec.sync(&district.server).unwrap().accepted, 1);
    admin.assign(&moving, "m1", true);
    p1.sync(&district.server).unwrap();
    let visit = p1.replica.record_visit(&new_visit(&moving, 1_000, "备份后的走访")).unwrap().id;
    assert_eq!(p1.sync(&district.server).unwrap().accepted, 1);
    drop(admin);

    district.server.kill();
    let (ok, _, err) = command(&["restore", "--data-dir", arg(&district.data), arg(&backup)]);
    assert!(ok, "{err}");
    district.server = Server::start(&district.data);
    let admin = district.admin();
    assert!(admin.visit_ids().is_empty(), "the restored store is the backup");

    // The coordinator's note is out of the coordinator's scope on the restored server,
    // which cannot tell the phone's claim from one reaching for a household it was never
    // given: it is pushed back and held for an admin, and the household leaves.
    let r = sec.sync(&district.server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (0, 1), "pushed back: {r:?}");
    assert!(r.households_removed.contains(&widened), "then it leaves: {r:?}");
    assert!(sec.replica.household(&widened).is_err());
    let held = admin.quarantine(Some("held"));
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0]["reason"].as_str().unwrap().contains("not in your scope"), "{held:?}");
    admin.ok(&format!("/v1/admin/quarantine/{}/release", held[0]["hash"].as_str().unwrap()), serde_json::json!({}));
    assert_eq!(sec.sync(&district.server).unwrap().accepted, 1, "the phone hears it was released");
    assert!(sec.replica.pending_changes().unwrap().is_empty());
    let m3 = district.phone("m3", "m3");
    m3.sync(&district.server).unwrap();
    assert_eq!(m3.replica.household(&widened).unwrap().notes, "书记备注：备份后", "merged on the server");

    // m1's visit depends on the assignment the restored server lost, which m1's phone
    // relays: both are held for an admin (the household is not m1's on the restored
    // server), not dropped.
    let r = p1.sync(&district.server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (0, 2), "{r:?}");
    assert_eq!(r.households_removed, vec![moving.clone()], "{r:?}");
    let held = admin.quarantine(Some("held"));
    assert_eq!(held.len(), 2, "{held:?}");
    let assignment = held.iter().find(|q| q["reason"].as_str().unwrap().contains("not in your scope")).expect("the assignment");
    let visit_held = held.iter().find(|q| q["hash"] != assignment["hash"]).unwrap();
    assert!(visit_held["reason"].as_str().unwrap().contains(assignment["hash"].as_str().unwrap()), "{held:?}");
    admin.ok(&format!("/v1/admin/quarantine/{}/release", assignment["hash"].as_str().unwrap()), serde_json::json!({}));
    assert_eq!(admin.visit_ids(), vec![visit.clone()], "released with the assignment it depends on");
    p1.sync(&district.server).unwrap();
    assert_eq!(p1.visit_ids(&moving), vec![visit], "the household is m1's again, with the visit");
    assert!(p1.replica.pending_changes().unwrap().is_empty());
}

#[test]
fn a_reconciliation_pushes_back_only_what_the_restored_server_lacks() {
    // Both sides changed a household since the backup: m1's phone has a visit the
    // restored server lost, the server a visit m2 pushed after the restore. m1's phone
    // pushes that one visit, not the household's whole history.
    let mut district = District::start();
    let backup = district.dir.path().join("backup.sqlite3");
    let (shared, p1, p2) = {
        let admin = district.admin();
        admin.branch_b1(&["c1"], &["m1", "m2"]);
        let shared = admin.household("共", "c1", "b1", &["m1", "m2"]);
        (shared, district.phone("m1", "m1"), district.phone("m2", "m2"))
    };
    p1.sync(&district.server).unwrap();
    p2.sync(&district.server).unwrap();
    for i in 0..5 {
        p1.replica.record_visit(&new_visit(&shared, 1_000 * (i + 1), &format!("备份前{i}"))).unwrap();
    }
    assert_eq!(p1.sync(&district.server).unwrap().accepted, 5);
    // m2's phone has them: its visit after the restore follows them, so the server's
    // heads are then all unknown to m1's phone before the answer is applied.
    p2.sync(&district.server).unwrap();
    let (ok, _, err) = command(&["backup", "--data-dir", arg(&district.data), arg(&backup)]);
    assert!(ok, "{err}");
    p1.replica.record_visit(&new_visit(&shared, 10_000, "备份后")).unwrap();
    assert_eq!(p1.sync(&district.server).unwrap().accepted, 1);

    district.server.kill();
    let (ok, _, err) = command(&["restore", "--data-dir", arg(&district.data), arg(&backup)]);
    assert!(ok, "{err}");
    district.server = Server::start(&district.data);
    p2.replica.record_visit(&new_visit(&shared, 20_000, "恢复后")).unwrap();
    let r = p2.sync(&district.server).unwrap();
    assert_eq!(r.accepted, 1, "{r:?}");

    let r = p1.sync(&district.server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (1, 0), "the one visit the server lost: {r:?}");
    assert!(r.households_changed.contains(&shared), "and m2's visit arrived: {r:?}");
    p2.sync(&district.server).unwrap();
    assert_eq!(p1.visit_ids(&shared).len(), 7);
    assert_eq!(p1.replica.household_json(&shared).unwrap(), p2.replica.household_json(&shared).unwrap());
    assert_eq!(district.admin().visit_ids().len(), 7);
}

#[test]
fn a_change_discarded_after_its_household_left_the_phone_is_dropped_and_not_asked_for_again() {
    // m1's held change stays on the phone after the household was reassigned away; the
    // admin then discards it. The phone drops it, asks for the household whole as after
    // any discard, hears that it is no longer its own, and stops asking.
    let district = District::start();
    let (server, admin) = (&district.server, district.admin());
    admin.branch_b1(&["c1", "c2"], &["m1", "m2"]);
    let h = admin.household("王", "c1", "b1", &["m1"]);
    let p1 = district.phone("m1", "m1");
    behind_on_role(&admin, &p1, "b1");
    p1.replica.update_household(&h, &HouseholdUpdate { community_id: Some("c2".into()), ..Default::default() }).unwrap();
    assert_eq!(p1.sync(server).unwrap().quarantined, 1);
    to_m2(&admin, &h);
    let r = p1.sync(server).unwrap();
    assert_eq!(r.households_removed, vec![h.clone()], "{r:?}");
    let held = admin.quarantine(Some("held"));
    assert_eq!(held.len(), 1, "{held:?}");
    admin.ok(&format!("/v1/admin/quarantine/{}/discard", held[0]["hash"].as_str().unwrap()), serde_json::json!({}));

    let r = p1.sync(server).unwrap();
    assert_eq!(r.discarded, 1, "{r:?}");
    assert!(p1.replica.pending_changes().unwrap().is_empty());
    assert!(p1.replica.list_households().unwrap().is_empty());
    let options = doorstep_core::SyncOptions::default();
    let next = p1.replica.sync_request(options.page_bytes, options.push_bytes).unwrap();
    assert!(next.rebuild.is_empty(), "not asked for again: {:?}", next.rebuild);
}

#[test]
fn a_phone_restored_from_its_own_older_backup_and_used_before_it_syncs_keeps_both_lives() {
    // After the backup the phone recorded a visit and synced; restored, it records
    // another before it syncs. Had both been made under one Automerge actor, they would
    // carry the same sequence number: neither side could take the other's, and every
    // sync of the phone would fail from then on. The app's restore flow tells the replica.
    let district = District::start();
    let (server, admin, dir) = (&district.server, district.admin(), &district.dir);
    admin.branch_b1(&["c1"], &["m1"]);
    let h = admin.household("王", "c1", "b1", &["m1"]);
    let m1 = BackedUpPhone { dir: dir.path(), device: admin.device("m1") };
    let p1 = m1.open();
    p1.sync(server).unwrap();
    let before = p1.replica.record_visit(&new_visit(&h, 1_000, "备份之前")).unwrap().id;
    assert_eq!(p1.sync(server).unwrap().accepted, 1);
    let first_life = p1.replica.record_visit(&new_visit(&h, 2_000, "备份之后，同一次打开")).unwrap().id;
    drop(p1);
    m1.back_up();
    let p1 = m1.open();
    assert_eq!(p1.sync(server).unwrap().accepted, 1);
    let lost_life = p1.replica.record_visit(&new_visit(&h, 3_000, "备份之后")).unwrap().id;
    assert_eq!(p1.sync(server).unwrap().accepted, 1);
    drop(p1);

    m1.restore();
    let p1 = m1.open();
    p1.replica.restored_from_backup().unwrap();
    let restored_life = p1.replica.record_visit(&new_visit(&h, 4_000, "恢复之后，同步之前")).unwrap().id;
    let r = p1.sync(server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (2, 0), "the backup's unsent visit and the new one: {r:?}");
    let mut expected = vec![before, first_life, lost_life, restored_life];
    expected.sort();
    let mut on_phone = p1.visit_ids(&h);
    on_phone.sort();
    assert_eq!(on_phone, expected);
    let mut on_server = admin.visit_ids();
    on_server.sort();
    assert_eq!(on_server, expected);
    assert!(admin.quarantine(None).is_empty());
}

#[test]
fn a_change_made_while_the_removal_was_on_its_way_is_taken_also_behind_other_changes() {
    // As above, but the phone pushes one change per request and has a change to another
    // household first: the request that confirms the removal does not carry the late
    // visit yet.
    let (district, moving, p1, p2) = moving_from_m1();
    let (server, admin) = (&district.server, district.admin());
    let staying = admin.household("留", "c1", "b1", &["m1"]);
    p1.sync(server).unwrap();
    to_m2(&admin, &moving);
    let one_at_a_time = doorstep_core::SyncOptions { push_bytes: 1, ..Default::default() };
    let request = p1.replica.sync_request(one_at_a_time.page_bytes, one_at_a_time.push_bytes).unwrap();
    let first = p1.replica.record_visit(&new_visit(&staying, 1_000, "另一户")).unwrap().id;
    let late = p1.replica.record_visit(&new_visit(&moving, 2_000, "请求途中记录")).unwrap().id;
    let answer = send(server, &p1, &request);
    assert_eq!(answer.removed, vec![moving.clone()]);
    p1.replica.apply_sync_response(answer).unwrap();

    let r = p1.sync_with(&server.url, &one_at_a_time).unwrap();
    assert_eq!((r.accepted, r.quarantined), (2, 0), "{r:?}");
    assert_eq!(r.households_removed, vec![moving.clone()], "{r:?}");
    assert!(admin.quarantine(None).is_empty());
    assert_eq!(p1.household_ids(), vec![staying.clone()]);
    assert_eq!(admin.visit_ids().len(), 2, "{first} and {late}");
    p2.sync(server).unwrap();
    assert_eq!(p2.visit_ids(&moving), vec![late]);
}

#[test]
fn a_change_made_on_a_held_change_before_its_discard_was_heard_is_discarded_with_it() {
    // m1's change is held; offline, m1 records a visit on top of it; the admin discards
    // the held change. The visit, pushed after the discard, goes with it: it is not held
    // for an admin to discard a second time.
    let district = District::start();
    let (server, admin) = (&district.server, district.admin());
    admin.branch_b1(&["c1", "c2"], &["m1"]);
    let h = admin.household("王", "c1", "b1", &["m1"]);
    let p1 = district.phone("m1", "m1");
    behind_on_role(&admin, &p1, "b1");
    p1.replica.update_household(&h, &HouseholdUpdate { community_id: Some("c2".into()), ..Default::default() }).unwrap();
    assert_eq!(p1.sync(server).unwrap().quarantined, 1);
    let on_top = p1.replica.record_visit(&new_visit(&h, 1_000, "之后的走访")).unwrap().id;
    let held = admin.quarantine(Some("held"));
    admin.ok(&format!("/v1/admin/quarantine/{}/discard", held[0]["hash"].as_str().unwrap()), serde_json::json!({}));

    let r = p1.sync(server).unwrap();
    assert_eq!((r.quarantined, r.discarded), (0, 2), "told once each: {r:?}");
    assert!(p1.replica.pending_changes().unwrap().is_empty());
    assert!(admin.quarantine(Some("held")).is_empty(), "nothing left for an admin");
    let decided = admin.quarantine(Some("discarded"));
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert!(decided.iter().any(|q| q["reason"].as_str().unwrap().contains("which an admin discarded")), "{decided:?}");
    assert_eq!(p1.replica.household(&h).unwrap().community_id, "c1", "rebuilt from the server");
    assert!(!p1.visit_ids(&h).contains(&on_top));
    assert!(!admin.visit_ids().contains(&on_top));
    assert_eq!(p1.sync(server).unwrap().discarded, 0, "not told again");
}

#[test]
fn a_change_held_for_a_dependency_the_restored_server_lost_merges_once_that_arrives() {
    // After the backup the phone recorded a visit that was acknowledged, then another on
    // top of it, not yet sent. The restored server lacks the first: the second is held for
    // it, and must merge once the reconciliation brings the first back (even when the
    // phone sends the second first), not wait for an admin.
    let mut district = District::start();
    let backup = district.dir.path().join("backup.sqlite3");
    let (h, p1) = {
        let admin = district.admin();
        admin.branch_b1(&["c1"], &["m1"]);
        let h = admin.household("王", "c1", "b1", &["m1"]);
        let p1 = district.phone("m1", "m1");
        p1.sync(&district.server).unwrap();
        (h, p1)
    };
    let (ok, _, err) = command(&["backup", "--data-dir", arg(&district.data), arg(&backup)]);
    assert!(ok, "{err}");
    let first = p1.replica.record_visit(&new_visit(&h, 1_000, "备份后已同步")).unwrap().id;
    assert_eq!(p1.sync(&district.server).unwrap().accepted, 1);
    let second = p1.replica.record_visit(&new_visit(&h, 2_000, "备份后未同步")).unwrap().id;

    district.server.kill();
    let (ok, _, err) = command(&["restore", "--data-dir", arg(&district.data), arg(&backup)]);
    assert!(ok, "{err}");
    district.server = Server::start(&district.data);
    let admin = district.admin();

    p1.sync(&district.server).unwrap();
    assert!(p1.replica.pending_changes().unwrap().is_empty(), "{:?}", p1.replica.pending_changes().unwrap());
    assert!(admin.quarantine(Some("held")).is_empty(), "{:?}", admin.quarantine(None));
    let mut visits = admin.visit_ids();
    visits.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(visits, expected);
}

#[test]
fn a_household_created_after_the_backup_comes_back_once_an_admin_releases_its_creation() {
    // After the backup an admin created a household, and its member recorded a visit on
    // it. The restored server lacks the household: the phone's reconciliation pushes its
    // history, which is held (a member's phone may not create a household). The admin's
    // release of the creation brings the household back, and the visit with it.
    let mut district = District::start();
    let backup = district.dir.path().join("backup.sqlite3");
    let p1 = {
        let admin = district.admin();
        admin.branch_b1(&["c1"], &["m1"]);
        let p1 = district.phone("m1", "m1");
        p1.sync(&district.server).unwrap();
        p1
    };
    let (ok, _, err) = command(&["backup", "--data-dir", arg(&district.data), arg(&backup)]);
    assert!(ok, "{err}");
    let h = district.admin().household("新", "c1", "b1", &["m1"]);
    p1.sync(&district.server).unwrap();
    let visit = p1.replica.record_visit(&new_visit(&h, 1_000, "备份后新住户的走访")).unwrap().id;
    assert_eq!(p1.sync(&district.server).unwrap().accepted, 1);

    district.server.kill();
    let (ok, _, err) = command(&["restore", "--data-dir", arg(&district.data), arg(&backup)]);
    assert!(ok, "{err}");
    district.server = Server::start(&district.data);
    let admin = district.admin();
    assert!(admin.get_ok("/v1/households").as_array().unwrap().is_empty());

    p1.sync(&district.server).unwrap();
    let held = admin.quarantine(Some("held"));
    assert_eq!(held.len(), 2, "the creation and the visit: {held:?}");
    let creation = held.iter().find(|q| q["reason"].as_str().unwrap().contains("does not exist")).expect("{held:?}");
    // The server lacks it: it stays on the phone, its changes held, for the member to see.
    assert_eq!(p1.household_ids(), std::slice::from_ref(&h));
    assert_eq!(p1.replica.pending_changes().unwrap().len(), 2);

    admin.ok(&format!("/v1/admin/quarantine/{}/release", creation["hash"].as_str().unwrap()), serde_json::json!({}));
    assert!(admin.quarantine(Some("held")).is_empty(), "the visit is released with it: {:?}", admin.quarantine(None));
    assert_eq!(household_row(&admin, &h)["family_name"], "新");
    assert_eq!(household_row(&admin, &h)["visits"], 1);
    assert_eq!(admin.visit_ids(), std::slice::from_ref(&visit));
    let r = p1.sync(&district.server).unwrap();
    assert_eq!(r.accepted, 2, "{r:?}");
    assert!(p1.replica.pending_changes().unwrap().is_empty());
    assert_eq!(p1.visit_ids(&h), [visit]);
    drop(admin);
    district.server.assert_sound();
}
