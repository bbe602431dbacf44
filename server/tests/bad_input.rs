//! Bad input, real processes, the server started with `--config` limiting requests to
//! 64 KiB (and 1 MiB once decompressed):
//! - malformed, truncated and empty sync bodies, garbage or corrupted Automerge bytes in a
//!   well-formed request, an empty or overlong household id, a wrong protocol version, a
//!   decompression bomb, a request whose changes claim more operations than one may (a
//!   few bytes can claim thousands): 400 with a clear message;
//! - oversized bodies: 413; missing, wrong or revoked token: 401, checked before the body
//!   or the query is read (a body without a token is not looked at);
//! - malformed JSON, bad CSV rows, bad filters on the other endpoints: 400;
//! - every refusal answers `{"error": "<中文> / <English>"}`, including the body limit's
//!   413 and a JSON body of the wrong shape (400, naming the field);
//! - another member's household: quarantined, the reason reported to the phone
//!   (`pending_changes`) and listed for admins;
//! - the server never panics (it still answers `/healthz`, its log holds no panic) and
//!   stores nothing from a rejected request: the change log, the quarantine, `/v1/visits`
//!   are the same before and after, even when the rejected request also carried a valid
//!   change.

mod support;

use doorstep_core::sync::protocol::{self, PushedChange, SyncRequest};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};
use support::*;

/// The text of an error answer, which must be `{"error": "<中文> / <English>"}` like
/// every other error of the server (not a framework's plain text).
fn bilingual_error(body: &str) -> String {
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("a JSON error body ({e}): {body}"));
    let text = json["error"].as_str().unwrap_or_else(|| panic!("an \"error\" field: {body}")).to_string();
    let (zh, en) = text.split_once(" / ").unwrap_or_else(|| panic!("Chinese / English: {text}"));
    assert!(zh.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)), "Chinese first: {text}");
    assert!(en.chars().any(|c| c.is_ascii_alphabetic()), "then English: {text}");
    text
}

/// The observable state a rejected request must not change.
fn snapshot(admin: &Admin, data: &std::path::Path) -> ((i64, i64), Vec<String>, Vec<Value>, Value) {
    (store_counts(data), admin.visit_ids(), admin.quarantine(None), admin.get_ok("/v1/households"))
}

#[test]
fn bad_input_is_refused_with_a_clear_status_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let config = dir.path().join("doorstep.toml");
    std::fs::write(&config, "[limits]\nmax_request_bytes = 65536\nmax_decoded_bytes = 1048576\n").unwrap();
    let admin_token = create_admin(&data);
    let server = Server::start_with(&data, "127.0.0.1:0", &["--config", config.to_str().unwrap()]);
    let url = server.url.clone();
    let admin = Admin { server: &server, token: admin_token.clone() };
    admin.branch("b1");
    admin.community("c1");
    admin.member("m1", "b1");
    admin.member("m2", "b1");
    let h1 = admin.household("一", "c1", "b1", &["m1"]);
    let h2 = admin.household("二", "c1", "b1", &["m2"]);
    let p1 = Phone::new(dir.path(), "m1", "m1", admin.device("m1"));
    let p2 = Phone::new(dir.path(), "m2", "m2", admin.device("m2"));
    p1.sync(&server).unwrap();
    p2.sync(&server).unwrap();
    let accepted = p1.replica.record_visit(&new_visit(&h1, 1_000, "先前的走访")).unwrap().id;
    p1.sync(&server).unwrap();

    // A valid change waiting in p1's outbox, and the request the phone would send.
    let pending_visit = p1.replica.record_visit(&new_visit(&h1, 2_000, "尚未同步")).unwrap().id;
    let valid: SyncRequest = p1.replica.sync_request(protocol::DEFAULT_PAGE_BYTES, protocol::DEFAULT_PUSH_BYTES).unwrap();
    assert_eq!(valid.changes.len(), 1);
    let valid_change = valid.changes[0].clone();
    let token = p1.token.clone();
    let before = snapshot(&admin, &data);
    assert!(before.1.contains(&accepted) && !before.1.contains(&pending_visit));

    let with_changes = |changes: Vec<PushedChange>| SyncRequest { changes, ..valid.clone() };
    let encoded = protocol::encode(&valid);
    let mut corrupted = valid_change.bytes.clone();
    let mid = corrupted.len() / 2;
    corrupted[mid] ^= 0x5a;
    let bomb = with_changes(vec![PushedChange { household_id: h1.clone(), bytes: vec![0; 4 * 1024 * 1024] }]);
    let bomb = protocol::encode(&bomb);
    assert!(bomb.len() < 65536, "the bomb passes the body limit: {}", bomb.len());
    let wrong_version = protocol::encode(&SyncRequest { version: 99, ..valid.clone() });
    let update_the_app =
        format!("please update the app: the server speaks sync protocol versions 3 to {}, this app version 99", protocol::PROTOCOL_VERSION);

    // (name, body, status, words the message must contain)
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("empty body", vec![], 400, "cannot be read"),
        ("not zstd", b"GET / HTTP/1.1 hello".to_vec(), 400, "cannot be read"),
        ("zstd, but not a sync request", protocol::encode(&"你好".to_string()), 400, "cannot be read"),
        ("truncated to 1 byte", encoded[..1].to_vec(), 400, "cannot be read"),
        ("truncated to a third", encoded[..encoded.len() / 3].to_vec(), 400, "cannot be read"),
        ("last byte missing", encoded[..encoded.len() - 1].to_vec(), 400, "cannot be read"),
        ("trailing garbage", [encoded.clone(), b"xyz".to_vec()].concat(), 400, "cannot be read"),
        ("protocol version 99", wrong_version, 400, &update_the_app),
        (
            "garbage Automerge bytes after a valid change",
            protocol::encode(&with_changes(vec![
                valid_change.clone(),
                PushedChange { household_id: h1.clone(), bytes: b"\x85\x6f\x4a\x83garbage".to_vec() },
            ])),
            400,
            "change 2 cannot be decoded",
        ),
        (
            "a corrupted change",
            protocol::encode(&with_changes(vec![PushedChange { household_id: h1.clone(), bytes: corrupted }])),
            400,
            "change 1 cannot be decoded",
        ),
        (
            "an empty change",
            protocol::encode(&with_changes(vec![PushedChange { household_id: h1.clone(), bytes: vec![] }])),
            400,
            "cannot be decoded",
        ),
        (
            "no household id",
            protocol::encode(&with_changes(vec![PushedChange { household_id: " ".into(), ..valid_change.clone() }])),
            400,
            "no household id",
        ),
        (
            "a household id longer than any",
            protocol::encode(&with_changes(vec![PushedChange { household_id: "户".repeat(22), ..valid_change.clone() }])),
            400,
            "longer than 64 bytes",
        ),
        (
            "changes claiming more operations together than a request may",
            protocol::encode(&with_changes(vec![claiming_many_operations(); 21])),
            400,
            "claim 2099979 operations, more than 2000000",
        ),
        ("decompression bomb", bomb, 400, "cannot be read"),
        ("oversized garbage", noise(70_000), 413, "limit"),
        (
            "oversized well-formed request",
            protocol::encode(&with_changes(vec![
                valid_change.clone(),
                PushedChange { household_id: h1.clone(), bytes: noise(80_000) },
            ])),
            413,
            "limit",
        ),
    ];
    for (name, body, status, words) in &cases {
        let (got, message) = raw_sync(&url, Some(&token), body.clone());
        assert_eq!(got, *status, "{name}: {message}");
        let message = bilingual_error(&message);
        assert!(message.contains(words), "{name}: a clear message mentioning {words:?}, got {message}");
        assert!(server.healthy(), "{name}: the server still answers");
    }

    // Tokens: missing, wrong, malformed, revoked.
    let (revoked_device, revoked_token) = admin.device("m1");
    admin.revoke(&revoked_device);
    for (name, t) in [
        ("missing", None),
        ("wrong", Some("deadbeef".repeat(8))),
        ("empty", Some(String::new())),
        ("revoked", Some(revoked_token)),
    ] {
        let (got, message) = raw_sync(&url, t.as_deref(), encoded.clone());
        assert_eq!(got, 401, "{name} token: {message}");
        assert!(message.contains("token"), "{message}");
    }
    let r = http()
        .post(format!("{url}/v1/sync"))
        .header("authorization", format!("Token {token}"))
        .body(encoded.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "not a bearer token");
    let nothing_pushed = protocol::encode(&with_changes(vec![]));
    let r = http().post(format!("{url}/v1/sync")).header("authorization", format!("bearer {token}")).body(nothing_pushed);
    assert_eq!(r.send().unwrap().status().as_u16(), 200, "the scheme's name in any case");
    // Without a token, what the body holds is never looked at: 401, not 400 or 413.
    for (path, body) in [
        ("/v1/sync", noise(70_000)),
        ("/v1/sync", b"not a sync request".to_vec()),
        ("/v1/admin/branches", b"{\"id\": ".to_vec()),
        ("/v1/admin/households/import", vec![b'x'; 70_000]),
    ] {
        let r = http().post(format!("{url}{path}")).header("content-type", "application/json").body(body).send().unwrap();
        let status = r.status().as_u16();
        let message = bilingual_error(&r.text().unwrap());
        assert_eq!(status, 401, "{path}: {message}");
    }
    let (s, v) = get(&format!("{url}/v1/visits?from=yesterday"), "");
    assert_eq!(s, 401, "the token before the query: {v}");

    // The other endpoints.
    let json_post = |path: &str, body: &str| {
        let r = http()
            .post(format!("{url}{path}"))
            .bearer_auth(&admin_token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    let (s, m) = json_post("/v1/admin/households", r#"{"family_name": "王", "community_id": "c1", "bra"#);
    assert_eq!(s, 400, "truncated JSON: {m}");
    bilingual_error(&m);
    let (s, m) = json_post("/v1/enrol", "not json at all");
    assert_eq!(s, 400, "malformed enrolment: {m}");
    bilingual_error(&m);
    let (s, m) = json_post("/v1/admin/branches", r#"{"id": "b9"}"#);
    assert_eq!(s, 400, "well-formed JSON missing a field: {m}");
    assert!(bilingual_error(&m).contains("name"), "names the missing field: {m}");
    let (s, m) = json_post("/v1/admin/branches", &format!(r#"{{"id": "big", "name": "{}"}}"#, "长".repeat(30_000)));
    assert_eq!(s, 413, "oversized JSON: {m}");
    assert!(bilingual_error(&m).contains("limit"), "{m}");
    let big_csv = format!("{}\n{}", doorstep_server::admin::CSV_COLUMNS, "好,路1,c1,b1,,,,,,,,m1\n".repeat(4_000));
    let r = http().post(format!("{url}/v1/admin/households/import")).bearer_auth(&admin_token).body(big_csv).send().unwrap();
    assert_eq!(r.status().as_u16(), 413);
    bilingual_error(&r.text().unwrap());
    let (s, v) = post(
        &format!("{url}/v1/admin/households"),
        &admin_token,
        json!({"family_name": " ", "community_id": "c1", "branch_id": "b1"}),
    );
    assert_eq!(s, 400, "an empty family name: {v}");
    let (s, v) = post(
        &format!("{url}/v1/admin/households"),
        &admin_token,
        json!({"family_name": "王", "community_id": "nowhere", "branch_id": "b1"}),
    );
    assert_eq!(s, 400, "an unknown community: {v}");
    let (s, v) = post(
        &format!("{url}/v1/admin/members"),
        &admin_token,
        json!({"id": "x", "name": "x", "role": "member", "branch_id": "nowhere"}),
    );
    assert_eq!(s, 400, "an unknown branch: {v}");
    let csv = format!(
        "{}\n好,路1,c1,b1,,,,,,,,m1\n坏,路2,nowhere,b1,,,,,,,,m1\n好,路3,c1,b1,,,,,,,,m1\n坏,路4,c1,b1,,,,,,,,ghost\n",
        doorstep_server::admin::CSV_COLUMNS
    );
    let r =
        http().post(format!("{url}/v1/admin/households/import")).bearer_auth(&admin_token).body(csv).send().unwrap();
    let status = r.status().as_u16();
    let message = r.text().unwrap();
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("line 3") && message.contains("line 5") && !message.contains("line 2"),
        "bad rows by line: {message}"
    );
    for path in [
        "/v1/visits?from=yesterday",
        "/v1/issues?overdue_on=2026-13-45",
        "/v1/stats?overdue_on=soon",
        "/v1/admin/quarantine?status=maybe",
    ] {
        let (s, v) = get(&format!("{url}{path}"), &admin_token);
        assert_eq!(s, 400, "{path}: {v}");
        bilingual_error(&v.to_string());
    }
    for (path, token) in
        [("/v1/admin/quarantine/abc/release", &admin_token), ("/v1/admin/quarantine/abc/discard", &admin_token)]
    {
        let (s, v) = post(&format!("{url}{path}"), token, json!({}));
        assert_eq!(s, 404, "{path}: {v}");
    }
    let (s, v) = post(&format!("{url}/v1/admin/devices/no-such-device/revoke"), &admin_token, json!({}));
    assert_eq!(s, 404, "{v}");
    let (s, v) = get(&format!("{url}/v1/no-such-thing"), &admin_token);
    assert_eq!(s, 404, "{v}");
    bilingual_error(&v.to_string());
    let (s, v) = get(&format!("{url}/v1/sync"), &admin_token);
    assert_eq!(s, 405, "{v}");
    bilingual_error(&v.to_string());

    // Nothing of all that was stored.
    let after = snapshot(&admin, &data);
    assert_eq!(before, after, "a rejected request stores nothing");
    server.assert_sound();

    // Another member's household: m1 obtains h2 outside the server and records a visit
    // on it. Quarantined (not merged), the reason reported back, listed for admins.
    hand_over(&p2, &p1, &h2);
    let intruding = p1.replica.record_visit(&new_visit(&h2, 3_000, "不是我的住户")).unwrap().id;
    let report = p1.sync(&server).unwrap();
    assert_eq!((report.accepted, report.quarantined), (1, 1), "{report:?}");
    let pending = p1.replica.pending_changes().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].household_id, h2);
    let reason = pending[0].quarantine_reason.clone().expect("the phone shows why");
    assert!(reason.contains("not in your scope"), "{reason}");
    let held = admin.quarantine(Some("held"));
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["hash"], pending[0].change_hash.as_str());
    assert_eq!(held[0]["household_id"], h2.as_str());
    assert_eq!(held[0]["member_id"], "m1");
    assert_eq!(held[0]["reason"], reason.as_str());
    let visits = admin.visit_ids();
    assert!(visits.contains(&pending_visit), "the valid change arrived once sent properly");
    assert!(!visits.contains(&intruding), "the intruding visit is not merged");
    // m2 never receives it; a second sync changes nothing.
    p2.sync(&server).unwrap();
    assert!(!p2.visit_ids(&h2).contains(&intruding));
    let again = p1.sync(&server).unwrap();
    assert_eq!((again.accepted, again.quarantined), (0, 0), "a quarantined change is not resent: {again:?}");
    assert_eq!(admin.quarantine(None).len(), 1);
    server.assert_sound();
}

/// A change of a few dozen bytes claiming 99,999 operations (one `null` put repeated,
/// one run in each column): below the limit of one change, and decoding it costs what
/// decoding 99,999 operations does.
fn claiming_many_operations() -> PushedChange {
    use automerge::legacy::{Key, ObjectId, Op, OpType, SortedVec};
    let op = Op {
        action: OpType::Put(automerge::ScalarValue::Null),
        obj: ObjectId::Root,
        key: Key::Map("x".into()),
        pred: SortedVec::new(),
        insert: false,
    };
    let change = automerge::Change::from(automerge::ExpandedChange {
        operations: vec![op; 99_999],
        actor_id: automerge::ActorId::random(),
        hash: None,
        seq: 1,
        start_op: 1.try_into().unwrap(),
        time: 0,
        message: None,
        deps: vec![],
        extra_bytes: vec![],
        author: None,
    });
    assert!(change.raw_bytes().len() < 100, "{} bytes", change.raw_bytes().len());
    PushedChange { household_id: "h".into(), bytes: change.raw_bytes().to_vec() }
}

/// Incompressible bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    StdRng::seed_from_u64(0x9e3779b97f4a7c15).fill_bytes(&mut bytes);
    bytes
}
