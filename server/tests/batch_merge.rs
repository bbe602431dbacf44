//! The engine, in process, on real SQLite files: a batch of sync requests merged together
//! (grouped by household, groups on several threads) ends exactly as the same requests
//! handled one at a time: the same acknowledgements, the same documents, the same
//! change log and quarantine, and projection rows equal to those of each final document
//! projected whole. The batch mixes several devices on one household, a forbidden
//! change with a dependent in the middle of a request, and households of their own.

mod support;

use automerge::{ActorId, Change};
use std::path::Path;

use doorstep_core::document::{Author, HouseholdDocument, Scope};
use doorstep_core::sync::protocol::{PushedChange, SyncRequest, SyncResponse};
use doorstep_core::{HouseholdUpdate, VisitUpdate};
use doorstep_server::admin;
use doorstep_server::auth::hash_secret;
use doorstep_server::engine::{Engine, SyncJob};
use doorstep_server::org::{Branch, Community, Member, Role};
use doorstep_server::store::sqlite::SqliteStore;
use doorstep_server::store::data_dir::STORE_FILE;
use doorstep_server::store::QuarantineStatus;
use support::{copy_dir, new_visit};

fn job(
    token: &str,
    position: Option<doorstep_core::sync::protocol::Position>,
    changes: Vec<(String, Change)>,
) -> SyncJob {
    let pushed = changes.iter().map(|(h, c)| PushedChange { household_id: h.clone(), bytes: c.raw_bytes().to_vec() });
    let request = SyncRequest::new(position, pushed.collect());
    SyncJob { token_hash: hash_secret(token), request, changes }
}

fn member(id: &str, role: Role) -> Member {
    Member {
        id: id.into(),
        name: id.into(),
        role,
        branch_id: Some("b1".into()),
        scope_branches: vec![],
        scope_communities: vec![],
    }
}

/// A household as stored: id, records, heads.
type StoredHousehold = (String, serde_json::Value, Vec<String>);
/// A quarantined change: hash, reason, status.
type Held = (String, String, String);

/// The whole documents of `response`, loaded as a phone loads them.
fn whole(response: &SyncResponse) -> Vec<HouseholdDocument> {
    let loaded = response.whole.as_ref().expect("whole documents").load(&ActorId::random()).expect("they load");
    loaded.into_iter().map(|(doc, _)| doc).collect()
}

/// What a store holds, to compare two of them: every household's records and heads, and
/// the quarantine.
fn contents(engine: &mut Engine<SqliteStore>, admin_token: &str) -> (Vec<StoredHousehold>, Vec<Held>) {
    let response = one(engine.sync_batch(vec![job(admin_token, None, vec![])]));
    let mut docs: Vec<StoredHousehold> = whole(&response)
        .into_iter()
        .map(|mut doc| {
            let mut heads: Vec<String> = doc.heads().iter().map(|h| h.to_string()).collect();
            heads.sort();
            (doc.id().to_string(), doc.to_json(), heads)
        })
        .collect();
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut held: Vec<Held> = admin::quarantined(engine, None)
        .unwrap()
        .into_iter()
        .map(|q| (q.hash, q.reason, q.status.as_str().to_string()))
        .collect();
    held.sort();
    (docs, held)
}

/// Every row of the projection tables, sorted.
fn projection(file: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(file).unwrap();
    let mut rows = Vec::new();
    for table in ["households", "household_members", "visits", "issues", "conflicts"] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let columns = stmt.column_count();
        let mut query = stmt.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let values: Vec<String> = (0..columns).map(|i| format!("{:?}", row.get_ref(i).unwrap())).collect();
            rows.push(format!("{table}: {}", values.join(" | ")));
        }
    }
    rows.sort();
    rows
}

/// The projection rows of the store's documents, each projected whole into a new file.
fn projected_whole(engine: &mut Engine<SqliteStore>, admin_token: &str, file: &Path) -> Vec<String> {
    let response = one(engine.sync_batch(vec![job(admin_token, None, vec![])]));
    let mut store = doorstep_core::store::Store::open(file).unwrap();
    let tx = store.transaction().unwrap();
    for mut doc in whole(&response) {
        let view = doc.view(&Scope::Everything).unwrap();
        tx.save_document(&mut doc, &[], &view).unwrap();
    }
    tx.commit().unwrap();
    projection(file)
}

fn one(mut responses: Vec<doorstep_server::error::Result<SyncResponse>>) -> SyncResponse {
    assert_eq!(responses.len(), 1);
    responses.pop().unwrap().unwrap()
}

#[test]
fn a_batch_merged_in_parallel_ends_as_its_requests_handled_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let together_dir = dir.path().join("together");
    let alone_dir = dir.path().join("alone");

    // ----- one district, copied into two stores ----------------------------------------
    let mut engine = Engine::new(SqliteStore::open(&together_dir).unwrap());
    let admin_token = admin::create_admin(&mut engine, "admin", "管理员").unwrap().token;
    admin::add_branch(&mut engine, &Branch { id: "b1".into(), name: "一支部".into() }).unwrap();
    for c in ["c1", "c2"] {
        admin::add_community(&mut engine, &Community { id: c.into(), name: c.into() }).unwrap();
    }
    let members = ["m1", "m2", "m3", "m4"];
    for m in members {
        admin::add_member(&mut engine, &member(m, Role::Member)).unwrap();
    }
    let household = |engine: &mut Engine<SqliteStore>, family: &str, assigned: &[&str]| {
        let new = doorstep_core::NewHousehold {
            family_name: family.into(),
            community_id: "c1".into(),
            branch_id: "b1".into(),
            assigned_members: assigned.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        };
        admin::create_household(engine, "admin", &new).unwrap()
    };
    let shared = household(&mut engine, "共", &["m1", "m2"]);
    let h3a = household(&mut engine, "三甲", &["m3"]);
    let h3b = household(&mut engine, "三乙", &["m3"]);
    let h4 = household(&mut engine, "四", &["m4"]);
    let mut tokens = Vec::new();
    let mut phones: Vec<(Author, Vec<HouseholdDocument>, SyncResponse)> = Vec::new();
    for m in members {
        let enrolment = admin::enrol_device(&mut engine, m, "phone", None).unwrap();
        let token = admin::exchange_code(&mut engine, &enrolment.enrolment_code).unwrap();
        let first = one(engine.sync_batch(vec![job(&token.token, None, vec![])]));
        let docs = whole(&first);
        phones.push((Author { member_id: m.into(), device_id: token.device_id.clone() }, docs, first));
        tokens.push(token.token);
    }
    drop(engine);
    copy_dir(&together_dir, &alone_dir);

    // ----- what each phone recorded offline -----------------------------------------------
    let mut pushes: Vec<Vec<(String, Change)>> = Vec::new();
    for (k, (author, docs, _)) in phones.iter_mut().enumerate() {
        let mut changes = Vec::new();
        for doc in docs.iter_mut() {
            let before = doc.heads();
            let id = doc.id().to_string();
            let at = 1_000_000 * (k as i64 + 1);
            let first_visit =
                doc.record_visit(author, at, &new_visit(&id, at, &format!("{}的走访", author.member_id))).unwrap();
            if author.member_id == "m1" {
                // The same visit twice in one request: its projection is read again at the end.
                let update = VisitUpdate { notes: Some("补记：家长同意参加家长会".into()), ..Default::default() };
                doc.update_visit(author, at + 1, &first_visit, &update).unwrap();
            }
            if author.member_id == "m2" {
                // A forbidden change in the middle, a dependent after it.
                doc.update_household(
                    author,
                    at + 1,
                    &HouseholdUpdate { community_id: Some("c2".into()), ..Default::default() },
                )
                .unwrap();
                doc.record_visit(author, at + 2, &new_visit(&id, at + 2, "之后的走访")).unwrap();
            }
            doc.record_visit(
                author,
                at + 3,
                &new_visit(&id, at + 3, "第二次走访，备注较长：家长询问入学材料和学区划分"),
            )
            .unwrap();
            changes.extend(doc.changes_since(&before).into_iter().map(|c| (id.clone(), c)));
        }
        pushes.push(changes);
    }
    assert!(pushes.iter().map(Vec::len).sum::<usize>() >= 8, "enough changes to merge on several threads");
    let jobs = |pushes: &[Vec<(String, Change)>]| -> Vec<SyncJob> {
        phones
            .iter()
            .zip(&tokens)
            .zip(pushes)
            .map(|(((_, _, first), token), changes)| job(token, Some(first.position.clone()), changes.clone()))
            .collect()
    };

    // ----- together, and one by one ----------------------------------------------------------
    let mut together = Engine::new(SqliteStore::open(&together_dir).unwrap());
    let batch: Vec<SyncResponse> = together.sync_batch(jobs(&pushes)).into_iter().map(Result::unwrap).collect();
    let mut alone = Engine::new(SqliteStore::open(&alone_dir).unwrap());
    let single: Vec<SyncResponse> = jobs(&pushes).into_iter().map(|j| one(alone.sync_batch(vec![j]))).collect();

    for (k, (b, s)) in batch.iter().zip(&single).enumerate() {
        assert_eq!(b.acks, s.acks, "request {k}: the same acknowledgements, in the request's order");
        let hashes: Vec<[u8; 32]> = pushes[k].iter().map(|(_, c)| c.hash().0).collect();
        assert_eq!(b.acks.iter().map(|a| a.hash).collect::<Vec<_>>(), hashes);
    }
    let outcomes: Vec<usize> = batch
        .iter()
        .map(|r| r.acks.iter().filter(|a| a.outcome == doorstep_core::sync::protocol::Outcome::Accepted).count())
        .collect();
    assert_eq!(outcomes, vec![3, 1, 4, 2], "m2's forbidden change and its dependent are held");
    let (docs_together, held_together) = contents(&mut together, &admin_token);
    let (docs_alone, held_alone) = contents(&mut alone, &admin_token);
    assert_eq!(docs_together, docs_alone, "the same documents");
    assert_eq!(held_together, held_alone, "the same quarantine");
    assert_eq!(held_together.len(), 3, "the forbidden change and the two after it");
    assert!(held_together.iter().all(|(_, _, status)| status == QuarantineStatus::Held.as_str()));
    let visits_on = |id: &str| docs_together.iter().find(|d| d.0 == id).unwrap().1["visits"].as_object().unwrap().len();
    assert_eq!((visits_on(&shared), visits_on(&h3a), visits_on(&h3b), visits_on(&h4)), (3, 2, 2, 2));
    assert_eq!(docs_together.iter().find(|d| d.0 == shared).unwrap().1["household"]["community_id"], "c1");

    // What the batch wrote record by record is what projecting each document whole gives.
    let whole = projected_whole(&mut together, &admin_token, &dir.path().join("whole.sqlite3"));
    assert!(whole.iter().filter(|row| row.starts_with("visits:")).count() >= 9, "{whole:#?}");
    assert_eq!(projection(&together_dir.join(STORE_FILE)), whole);
    assert_eq!(projection(&alone_dir.join(STORE_FILE)), whole);

    // After a restart (documents loaded from the files, not memory) nothing differs.
    drop((together, alone));
    let mut together = Engine::new(SqliteStore::open(&together_dir).unwrap());
    let mut alone = Engine::new(SqliteStore::open(&alone_dir).unwrap());
    assert_eq!(contents(&mut together, &admin_token), contents(&mut alone, &admin_token));
}

#[test]
fn two_requests_of_one_device_in_a_batch_are_answered_in_turn() {
    // A phone that gave up waiting and sent its request again can have both in one
    // batch. It applies only one answer; whichever it is must hold everything the device
    // is owed, as if the two had come one after the other.
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::new(SqliteStore::open(dir.path()).unwrap());
    admin::add_branch(&mut engine, &Branch { id: "b1".into(), name: "一支部".into() }).unwrap();
    for c in ["c1", "c2"] {
        admin::add_community(&mut engine, &Community { id: c.into(), name: c.into() }).unwrap();
    }
    admin::add_member(&mut engine, &member("m1", Role::Member)).unwrap();
    let new = doorstep_core::NewHousehold {
        family_name: "王".into(),
        community_id: "c1".into(),
        branch_id: "b1".into(),
        assigned_members: vec!["m1".into()],
        ..Default::default()
    };
    let h = admin::create_household(&mut engine, "admin", &new).unwrap();
    let enrolment = admin::enrol_device(&mut engine, "m1", "phone", None).unwrap();
    let token = admin::exchange_code(&mut engine, &enrolment.enrolment_code).unwrap();
    let first = one(engine.sync_batch(vec![job(&token.token, None, vec![])]));
    let mut doc = whole(&first).remove(0);
    assert_eq!(doc.id(), h);
    let author = Author { member_id: "m1".into(), device_id: token.device_id.clone() };
    let before = doc.heads();
    doc.update_household(&author, 1, &HouseholdUpdate { community_id: Some("c2".into()), ..Default::default() }).unwrap();
    let forbidden: Vec<(String, Change)> = doc.changes_since(&before).into_iter().map(|c| (h.clone(), c)).collect();
    let pushed = one(engine.sync_batch(vec![job(&token.token, Some(first.position.clone()), forbidden.clone())]));
    assert!(matches!(pushed.acks[0].outcome, doorstep_core::sync::protocol::Outcome::Quarantined { .. }));
    let hash = forbidden[0].1.hash();
    engine.release("admin", &hash.to_string()).unwrap();

    // The phone is owed the news of the release; its two requests arrive together.
    let both = engine.sync_batch(vec![
        job(&token.token, Some(pushed.position.clone()), vec![]),
        job(&token.token, Some(pushed.position.clone()), vec![]),
    ]);
    for (k, answer) in both.into_iter().enumerate() {
        let answer = answer.unwrap();
        assert!(
            answer
                .acks
                .iter()
                .any(|a| a.hash == hash.0 && a.outcome == doorstep_core::sync::protocol::Outcome::Accepted),
            "answer {k} tells the phone its change was released: {:?}",
            answer.acks
        );
    }
}
