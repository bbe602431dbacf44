//! Changes that decode but do not fit, real processes: a phone (buggy, or in the wrong
//! hands) pushes Automerge changes whose bytes were altered and whose checksum was then
//! recomputed, so that they pass decoding: new visits, and edits of a visit. Every such
//! request is answered 200 (the change merged, or held in quarantine with its reason) or
//! 400, never a server error or a dropped connection, and the server does not die; an
//! admin who then releases every held change merges none that would break the household.
//! After a restart that reloads every document from SQLite, a new phone receives the
//! household whole, and its copy, saved and loaded again, holds every merged change as it
//! was pushed; an ordinary phone's visit still merges and reaches the coordinator, whose
//! replica file opens again.

mod support;

use std::collections::{BTreeMap, HashSet};

use automerge::ActorId;
use doorstep_core::document::HouseholdDocument;
use doorstep_core::sync::protocol::{self, Outcome, PushedChange, SyncRequest, SyncResponse};
use doorstep_core::{Author, VisitUpdate};
use doorstep_tests::altered::altered;
use serde_json::json;
use support::*;

/// Altered changes pushed, one request each.
const ALTERED: usize = 300;

/// The household as a new phone of `member` receives it, saved and loaded again as a
/// replica does when it compacts (Automerge rebuilds every change from its operations):
/// the hashes of the changes the saved copy holds.
fn received_whole(district: &District, member: &str, household: &str) -> HashSet<[u8; 32]> {
    let (_, _, mut received) = first_sync(district, member, household);
    let actor = ActorId::random();
    let saved = received.save();
    let mut again = HouseholdDocument::load(household, &saved, &actor).expect("its saved copy loads");
    assert_eq!(again.heads(), received.heads(), "saved again, the household keeps its heads");
    again.changes_since(&[]).iter().map(|c| c.hash().0).collect()
}

#[test]
fn altered_changes_that_still_decode_never_break_a_household() {
    let mut district = District::start();
    let admin = district.admin();
    admin.branch("b1");
    admin.community("c1");
    admin.member("m1", "b1");
    let h1 = admin.household("一", "c1", "b1", &["m1"]);

    // The forger: a device of m1's. Each request comes from a new actor (as if from a new
    // phone), so that every altered change is that actor's first or second: either a new
    // visit, altered, or a new visit and an altered edit of it.
    let (token, first, mut household) = first_sync(&district, "m1", &h1);
    let saved = household.save();
    let author = Author { member_id: "m1".into(), device_id: "d-forger".into() };
    let update = VisitUpdate { notes: Some("与家长交流了孩子的学习和作息".into()), ..Default::default() };
    let rng = &mut rng_from_env("crafted changes");
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut merged = Vec::new();
    for i in 0..ALTERED {
        let mut doc = HouseholdDocument::load(&h1, &saved, &ActorId::random()).unwrap();
        let before = doc.heads();
        let visit = doc.record_visit(&author, 1_000, &new_visit(&h1, 1_000, "与家长交流了孩子的学习情况")).unwrap();
        if i % 2 == 1 {
            doc.update_visit(&author, 2_000, &visit, &update).unwrap();
        }
        let mut changes: Vec<PushedChange> = doc
            .changes_since(&before)
            .iter()
            .map(|c| PushedChange { household_id: h1.clone(), bytes: c.raw_bytes().to_vec() })
            .collect();
        let last = changes.last_mut().unwrap();
        last.bytes = altered(&last.bytes, rng);
        let pushed = SyncRequest::new(Some(first.position.clone()), changes.clone());
        let (status, body) = raw_sync_bytes(&district.server.url, Some(&token), protocol::encode(&pushed));
        let outcome = match status {
            200 => {
                let answer = SyncResponse::decode(&body, 64 << 20).expect("a sync answer");
                assert_eq!(answer.acks.len(), changes.len(), "request {i}: one ack per change");
                for ack in &answer.acks {
                    if ack.outcome == Outcome::Accepted {
                        merged.push(ack.hash);
                    }
                }
                match &answer.acks.last().unwrap().outcome {
                    Outcome::Accepted => "merged",
                    Outcome::Quarantined { reason } => {
                        assert!(!reason.trim().is_empty(), "request {i}: a reason is given");
                        "quarantined"
                    }
                    other => panic!("request {i}: {other:?}"),
                }
            }
            400 => "refused (400)",
            _ => panic!("request {i}: status {status}: {}", String::from_utf8_lossy(&body)),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    // An admin who releases every held change still cannot merge one that does not fit.
    let mut releases: BTreeMap<u16, usize> = BTreeMap::new();
    for held in admin.quarantine(Some("held")) {
        let hash = held["hash"].as_str().unwrap();
        let url = format!("{}/v1/admin/quarantine/{hash}/release", district.server.url);
        let (status, body) = post(&url, &district.admin_token, json!({}));
        // 500 only for a panic the server contained (Automerge's, set off by the change).
        let contained = status == 500 && body["error"].as_str().is_some_and(|e| e.contains("failed inside while merging"));
        assert!(status == 200 || status == 400 || contained, "release of {hash}: {status} {body}");
        *releases.entry(status).or_default() += 1;
    }
    eprintln!("releases: {releases:?}");
    let contained = assert_only_contained_panics(&district.server);
    eprintln!("crafted changes: {outcomes:?}; {contained} Automerge panics contained");
    assert!(outcomes.contains_key("quarantined") && outcomes.contains_key("refused (400)"), "{outcomes:?}");

    // Every document reloads from SQLite, and survives being saved again.
    district.restart();
    let admin = district.admin();
    admin.coordinator("coord", &["b1"], &[]);
    let held = received_whole(&district, "coord", &h1);
    assert!(merged.iter().all(|hash| held.contains(hash)), "every merged change is held as it was pushed");
    let coordinator = district.phone("coord", "coord");
    coordinator.sync(&district.server).unwrap();
    assert_eq!(coordinator.household_ids(), vec![h1.clone()]);
    coordinator.replica.visits(&h1).unwrap();

    // An ordinary phone's visit still merges and reaches the coordinator, whose replica
    // file opens again with it.
    let phone = district.phone("m1", "m1");
    phone.sync(&district.server).unwrap();
    let genuine = phone.replica.record_visit(&new_visit(&h1, 2_000, "正常的走访")).unwrap();
    phone.sync(&district.server).unwrap();
    assert!(phone.replica.pending_changes().unwrap().is_empty(), "the ordinary visit merged");
    coordinator.sync(&district.server).unwrap();
    let (coordinator_file, device) = (district.dir.path().join("coord.sqlite3"), coordinator.device_id.clone());
    drop(coordinator);
    let reopened = doorstep_core::Replica::open(&coordinator_file, "coord", &device).unwrap();
    assert!(reopened.visits(&h1).unwrap().iter().any(|v| v.id == genuine.id), "the coordinator holds the ordinary visit");
    assert_only_contained_panics(&district.server);
}
