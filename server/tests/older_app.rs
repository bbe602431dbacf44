//! A phone on the previous protocol version (3, whose answers carry no `role`), real
//! process: it keeps syncing while its member updates the app. Its pushed visit is
//! checked and merged like any other, and it is answered in version 3, which its app
//! reads to the last byte. A phone on a version older still is told to update the app.

mod support;

use doorstep_core::sync::protocol::{self, Ack, Heads, HouseholdData, Outcome, Position, WholeDocuments};
use serde::Deserialize;
use support::*;

/// `body` (one zstd frame) read as a version-3 answer; the bytes left after it.
fn as_version_3(body: &[u8]) -> (ResponseV3, usize) {
    let raw = zstd::decode_all(body).unwrap();
    let (answer, rest) = postcard::take_from_bytes::<ResponseV3>(&raw).expect("laid out as version 3");
    (answer, rest.len())
}

/// A sync response as version 3 lays it out.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Read whole, to show that every byte is where version 3 expects it.
struct ResponseV3 {
    version: u16,
    acks: Vec<Ack>,
    data: Vec<HouseholdData>,
    whole: Option<WholeDocuments>,
    removed: Vec<String>,
    position: Position,
    more: bool,
    reconcile_needed: bool,
    server_heads: Vec<Heads>,
}

#[test]
fn a_phone_on_protocol_3_keeps_syncing_and_is_answered_in_3() {
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1"]);
    let h = admin.household("旧", "c1", "b1", &["m1"]);
    let phone = district.phone("m1", "m1");
    phone.sync(&district.server).unwrap();
    let visit = phone.replica.record_visit(&new_visit(&h, 1_000, "旧版应用记录的走访")).unwrap().id;

    // The request as the app of version 3 sends it: the same message, version 3.
    let mut request = phone.replica.sync_request(protocol::DEFAULT_PAGE_BYTES, protocol::DEFAULT_PUSH_BYTES).unwrap();
    assert_eq!(request.changes.len(), 1);
    request.version = 3;
    let (status, body) = raw_sync_bytes(&district.server.url, Some(&phone.token), protocol::encode(&request));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (answer, left) = as_version_3(&body);
    assert_eq!((answer.version, left), (3, 0), "a version-3 answer, read to its last byte");
    assert_eq!(answer.acks.len(), 1);
    assert_eq!(answer.acks[0].outcome, Outcome::Accepted);
    assert!(admin.visit_ids().contains(&visit), "merged like any other");
    // This version's reader refuses it; the answer to version 4 has its `role` byte more.
    assert!(protocol::SyncResponse::decode(&body, 1 << 20).is_err());
    request.version = protocol::PROTOCOL_VERSION;
    request.changes.clear();
    let (status, now) = raw_sync_bytes(&district.server.url, Some(&phone.token), protocol::encode(&request));
    assert_eq!(status, 200);
    assert_eq!(protocol::SyncResponse::decode(&now, 1 << 20).unwrap().role, doorstep_core::Role::Member);
    let (answer, left) = as_version_3(&now);
    assert_eq!((answer.version, left), (4, 1));

    // Older still: told to update the app, nothing stored.
    request.version = 2;
    let (status, text) = raw_sync(&district.server.url, Some(&phone.token), protocol::encode(&request));
    assert_eq!(status, 400);
    assert!(text.contains("please update the app: the server speaks sync protocol versions 3 to 4, this app version 2"), "{text}");
    district.server.assert_sound();
}
