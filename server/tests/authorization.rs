//! Authorization matrix, real processes: every endpoint × role (member, coordinator,
//! admin, no token, wrong token, revoked token) × own/other scope.
//!
//! - public endpoints (`/healthz`, `/metrics`, `/v1/enrol` with a code) answer everyone;
//!   `/metrics` asks for its own token when the server is given `--metrics-token`;
//! - admin endpoints: 200 for admins, 403 for members and coordinators (in or out of
//!   their scope), 401 without a valid token; a refused call changes nothing;
//! - read API: 403 for members, 200 for coordinators limited to their branches and
//!   communities (a filter on another scope gives nothing), 200 and everything for admins;
//! - sync: any enrolled device, each receiving only its scope; a push to a household
//!   outside the member's scope is quarantined; a revoked device's sync gets 401.

mod support;

use doorstep_core::sync::protocol;
use doorstep_core::{Error, HouseholdUpdate};
use doorstep_server::admin::CSV_COLUMNS;
use reqwest::Method;
use serde_json::{json, Value};
use support::*;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Member,
    Coordinator,
    Admin,
    NoToken,
    /// A well-formed token nobody holds.
    WrongToken,
    /// Not a bearer token at all.
    WrongScheme,
    RevokedMember,
    RevokedCoordinator,
    RevokedAdmin,
}

const CALLERS: [Caller; 9] = [
    Caller::Member,
    Caller::Coordinator,
    Caller::Admin,
    Caller::NoToken,
    Caller::WrongToken,
    Caller::WrongScheme,
    Caller::RevokedMember,
    Caller::RevokedCoordinator,
    Caller::RevokedAdmin,
];

/// Which rule an endpoint follows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Public,
    Sync,
    Admin,
    Read,
}

struct Tokens {
    member: String,
    coordinator: String,
    admin: String,
    revoked_member: String,
    revoked_coordinator: String,
    revoked_admin: String,
}

fn expected(kind: Kind, caller: Caller) -> u16 {
    let valid = matches!(caller, Caller::Member | Caller::Coordinator | Caller::Admin);
    match kind {
        Kind::Public => 200,
        _ if !valid => 401,
        Kind::Sync => 200,
        Kind::Admin if caller == Caller::Admin => 200,
        Kind::Admin => 403,
        Kind::Read if caller == Caller::Member => 403,
        Kind::Read => 200,
    }
}

/// Call an endpoint as `caller`: the status and the body.
fn call(url: &str, tokens: &Tokens, caller: Caller, method: &Method, path: &str, body: &Body) -> (u16, String) {
    let mut r = http().request(method.clone(), format!("{url}{path}"));
    r = match caller {
        Caller::Member => r.bearer_auth(&tokens.member),
        Caller::Coordinator => r.bearer_auth(&tokens.coordinator),
        Caller::Admin => r.bearer_auth(&tokens.admin),
        Caller::NoToken => r,
        Caller::WrongToken => r.bearer_auth("0f".repeat(32)),
        Caller::WrongScheme => r.header("authorization", format!("Basic {}", tokens.admin)),
        Caller::RevokedMember => r.bearer_auth(&tokens.revoked_member),
        Caller::RevokedCoordinator => r.bearer_auth(&tokens.revoked_coordinator),
        Caller::RevokedAdmin => r.bearer_auth(&tokens.revoked_admin),
    };
    r = match body {
        Body::None => r,
        Body::Json(v) => r.json(v),
        Body::Text(t) => r.header("content-type", "text/csv").body(t.clone()),
        Body::Sync(b) => r.header("content-type", protocol::CONTENT_TYPE).body(b.clone()),
    };
    let resp = r.send().expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.text().unwrap_or_default())
}

#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    Text(String),
    Sync(Vec<u8>),
}

struct Endpoint {
    kind: Kind,
    method: Method,
    path: String,
    body: Body,
    /// For admin endpoints: whether the target lies in the coordinator's scope (the
    /// answer must not depend on it).
    note: &'static str,
}

fn ep(kind: Kind, method: Method, path: impl Into<String>, body: Body, note: &'static str) -> Endpoint {
    Endpoint { kind, method, path: path.into(), body, note }
}

#[test]
fn every_endpoint_by_every_role_in_and_out_of_scope() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let admin_token = create_admin(&data);
    let server = Server::start(&data);
    let url = server.url.clone();
    let admin = Admin { server: &server, token: admin_token.clone() };
    for b in ["b1", "b2"] {
        admin.branch(b);
    }
    for c in ["c1", "c2", "c3"] {
        admin.community(c);
    }
    admin.member("m1", "b1");
    admin.member("m2", "b2");
    // The coordinator looks after branch b1 and community c3.
    admin.coordinator("coord", &["b1"], &["c3"]);
    let h1 = admin.household("一", "c1", "b1", &["m1"]); // coordinator: yes (branch)
    let h2 = admin.household("二", "c1", "b2", &["m2"]); // no
    let h3 = admin.household("三", "c3", "b2", &["m2"]); // yes (community)
    let h4 = admin.household("四", "c2", "b2", &["m1"]); // no, though m1 holds it
    let h5 = admin.household("五", "c2", "b1", &["m1"]); // yes (branch)
    let coord_scope = sorted(vec![h1.clone(), h3.clone(), h5.clone()]);
    let everything = sorted(vec![h1.clone(), h2.clone(), h3.clone(), h4.clone(), h5.clone()]);

    // Phones.
    let p1 = Phone::new(dir.path(), "m1", "m1", admin.device("m1"));
    let p2 = Phone::new(dir.path(), "m2", "m2", admin.device("m2"));
    let pc = Phone::new(dir.path(), "coord", "coord", admin.device("coord"));
    let admin_phone = Phone::new(dir.path(), "admin", "admin", admin.device("admin"));
    for p in [&p1, &p2, &pc, &admin_phone] {
        p.sync(&server).unwrap();
    }
    // Sync scope: own households only, the coordinator's branches and communities, all.
    assert_eq!(p1.household_ids(), sorted(vec![h1.clone(), h4.clone(), h5.clone()]));
    assert_eq!(p2.household_ids(), sorted(vec![h2.clone(), h3.clone()]));
    assert_eq!(pc.household_ids(), coord_scope);
    assert_eq!(admin_phone.household_ids(), everything);

    // Records: visits and issues in and out of the coordinator's scope.
    let v1 = p1.replica.record_visit(&new_visit(&h1, 1_000, "一号走访")).unwrap().id;
    let v4 = p1.replica.record_visit(&new_visit(&h4, 2_000, "四号走访")).unwrap().id;
    let v2 = p2.replica.record_visit(&new_visit(&h2, 3_000, "二号走访")).unwrap().id;
    let v3 = p2.replica.record_visit(&new_visit(&h3, 4_000, "三号走访")).unwrap().id;
    let i1 = p1.replica.raise_issue(&new_issue(&h1, "一号问题")).unwrap().id;
    let i2 = p2.replica.raise_issue(&new_issue(&h2, "二号问题")).unwrap().id;
    let r1 = p1.sync(&server).unwrap();
    assert_eq!((r1.accepted, r1.quarantined), (3, 0), "{r1:?}");
    // Two changes members may not make (coordinator fields), for the release and discard
    // endpoints. m1's phone, told at its sync that m1 is a member, refuses them. A second
    // phone of m1 that has not synced yet (it took the households from the first, by
    // hand) does not know, and makes them: the server holds them.
    let moves = [
        (&h4, HouseholdUpdate { community_id: Some("c1".into()), ..Default::default() }),
        (&h5, HouseholdUpdate { branch_id: Some("b2".into()), ..Default::default() }),
    ];
    let second = Phone::new(dir.path(), "m1-second", "m1", admin.device("m1"));
    for (h, update) in &moves {
        let refused = p1.replica.update_household(h, update).unwrap_err();
        assert!(matches!(&refused, Error::NotAllowed { reason } if reason.contains("members cannot change household")));
        hand_over(&p1, &second, h);
        second.replica.update_household(h, update).unwrap();
    }
    let r = second.sync(&server).unwrap();
    assert_eq!((r.accepted, r.quarantined), (0, 2), "{r:?}");
    p2.sync(&server).unwrap();
    let held = admin.quarantine(Some("held"));
    assert_eq!(held.len(), 2, "{held:?}");
    let hash_of = |h: &str| held.iter().find(|q| q["household_id"] == h).unwrap()["hash"].as_str().unwrap().to_string();
    let (q4, q5) = (hash_of(&h4), hash_of(&h5));

    // Own/other scope for sync: m1 obtains m2's household h2 outside the server and
    // records a visit on it: quarantined, not merged, the reason reported to the phone.
    hand_over(&p2, &p1, &h2);
    let smuggled = p1.replica.record_visit(&new_visit(&h2, 5_000, "不是我的住户")).unwrap().id;
    let r = p1.sync(&server).unwrap();
    assert_eq!(r.quarantined, 1, "{r:?}");
    let pending = p1.replica.pending_changes().unwrap();
    let reason = pending.iter().find(|c| c.household_id == h2).and_then(|c| c.quarantine_reason.clone());
    assert!(reason.as_deref().is_some_and(|r| r.contains("not in your scope")), "{pending:?}");
    assert!(!admin.visit_ids().contains(&smuggled), "a change outside the member's scope is not merged");
    assert_eq!(admin.quarantine(Some("held")).len(), 3);

    // Revoked tokens, one per role.
    let revoked = |member: &str| {
        let (id, token) = admin.device(member);
        admin.revoke(&id);
        token
    };
    let (spare_device, spare_token) = admin.device("m2");
    let tokens = Tokens {
        member: p1.token.clone(),
        coordinator: pc.token.clone(),
        admin: admin_token.clone(),
        revoked_member: revoked("m1"),
        revoked_coordinator: revoked("coord"),
        revoked_admin: revoked("admin"),
    };

    let csv = format!("{CSV_COLUMNS}\n导入,路1,c1,b1,,,,,,,,m1\n");
    let sync_body = protocol::encode(&empty_sync_request());
    let endpoints = vec![
        ep(Kind::Public, Method::GET, "/healthz", Body::None, ""),
        ep(Kind::Public, Method::GET, "/metrics", Body::None, ""),
        ep(Kind::Sync, Method::POST, "/v1/sync", Body::Sync(sync_body), ""),
        ep(Kind::Admin, Method::POST, "/v1/admin/branches", Body::Json(json!({"id": "b9", "name": "新支部"})), ""),
        ep(Kind::Admin, Method::POST, "/v1/admin/communities", Body::Json(json!({"id": "c9", "name": "新社区"})), ""),
        ep(
            Kind::Admin,
            Method::POST,
            "/v1/admin/members",
            Body::Json(json!({"id": "m9", "name": "m9", "role": "coordinator", "scope_branches": ["b1"]})),
            "a coordinator of the caller's own branch",
        ),
        ep(
            Kind::Admin,
            Method::POST,
            "/v1/admin/households",
            Body::Json(
                json!({"family_name": "新", "community_id": "c1", "branch_id": "b1", "assigned_members": ["m1"]}),
            ),
            "in the coordinator's branch",
        ),
        ep(Kind::Admin, Method::POST, "/v1/admin/households/import", Body::Text(csv), "in the coordinator's branch"),
        ep(
            Kind::Admin,
            Method::POST,
            format!("/v1/admin/households/{h1}/assignment"),
            Body::Json(json!({"member_id": "m2"})),
            "own scope: h1 is in the coordinator's branch, and m1's",
        ),
        ep(
            Kind::Admin,
            Method::POST,
            format!("/v1/admin/households/{h2}/assignment"),
            Body::Json(json!({"member_id": "m1"})),
            "other scope: h2 is outside the coordinator's scope and not m1's",
        ),
        ep(Kind::Admin, Method::POST, "/v1/admin/devices", Body::Json(json!({"member_id": "m1"})), "own device"),
        ep(Kind::Admin, Method::POST, format!("/v1/admin/devices/{spare_device}/revoke"), Body::Json(json!({})), ""),
        ep(Kind::Admin, Method::GET, "/v1/admin/quarantine", Body::None, ""),
        ep(Kind::Admin, Method::GET, "/v1/admin/backup", Body::None, ""),
        ep(Kind::Admin, Method::GET, "/v1/admin/organisation", Body::None, ""),
        ep(Kind::Admin, Method::GET, "/v1/admin/devices", Body::None, ""),
        ep(Kind::Admin, Method::GET, "/v1/admin/devices?member=m1", Body::None, "the member's own devices"),
        ep(
            Kind::Admin,
            Method::POST,
            format!("/v1/admin/quarantine/{q4}/release"),
            Body::None,
            "the member's own change",
        ),
        ep(
            Kind::Admin,
            Method::POST,
            format!("/v1/admin/quarantine/{q5}/discard"),
            Body::None,
            "in the coordinator's branch",
        ),
        ep(Kind::Read, Method::GET, "/v1/households", Body::None, ""),
        ep(Kind::Read, Method::GET, "/v1/households?branch=b2", Body::None, "other scope"),
        ep(Kind::Read, Method::GET, "/v1/visits", Body::None, ""),
        ep(Kind::Read, Method::GET, "/v1/visits?member=m2", Body::None, ""),
        ep(Kind::Read, Method::GET, "/v1/issues", Body::None, ""),
        ep(Kind::Read, Method::GET, "/v1/issues?community=c1", Body::None, ""),
        ep(Kind::Read, Method::GET, "/v1/stats", Body::None, ""),
        ep(Kind::Read, Method::GET, "/v1/stats?branch=b2", Body::None, "other scope"),
    ];

    // Every refused caller first (nothing may change), the admin last.
    let before = (store_counts(&data), admin.get_ok("/v1/households"), admin.quarantine(None));
    let mut cells = 0;
    for caller in CALLERS.iter().filter(|c| **c != Caller::Admin).chain([&Caller::Admin]) {
        if *caller == Caller::Admin {
            let after = (store_counts(&data), admin.get_ok("/v1/households"), admin.quarantine(None));
            assert_eq!(before, after, "refused calls changed nothing");
        }
        for e in &endpoints {
            let (status, body) = call(&url, &tokens, *caller, &e.method, &e.path, &e.body);
            let want = expected(e.kind, *caller);
            assert_eq!(status, want, "{caller:?} {} {} ({}) -> {body}", e.method, e.path, e.note);
            if status == 401 || status == 403 {
                let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("a JSON error: {body}"));
                assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "a clear message: {body}");
            }
            cells += 1;
        }
    }
    assert_eq!(cells, CALLERS.len() * endpoints.len());

    // What the admin calls did.
    let (status, _) = post(
        &format!("{url}/v1/admin/members"),
        &admin_token,
        json!({"id": "m10", "name": "m10", "role": "member", "branch_id": "b9"}),
    );
    assert_eq!(status, 200, "branch b9 exists now");
    let org = admin.get_ok("/v1/admin/organisation");
    assert_eq!(ids(&org["branches"]), vec!["b1", "b2", "b9"]);
    assert_eq!(ids(&org["communities"]), vec!["c1", "c2", "c3", "c9"]);
    let coordinator = org["members"].as_array().unwrap().iter().find(|m| m["id"] == "m9").expect("m9 listed");
    assert_eq!((coordinator["role"].as_str(), &coordinator["scope_branches"]), (Some("coordinator"), &json!(["b1"])));
    assert!(ids(&org["members"]).contains(&"m10".to_string()), "{org}");
    let q = admin.quarantine(None);
    let status_of = |hash: &str| q.iter().find(|c| c["hash"] == hash).unwrap()["status"].as_str().unwrap().to_string();
    assert_eq!(status_of(&q4), "released");
    assert_eq!(status_of(&q5), "discarded");
    let (status, _) = raw_sync(&url, Some(&spare_token), protocol::encode(&empty_sync_request()));
    assert_eq!(status, 401, "the spare device was revoked by the admin");
    // The admin finds it in m2's devices: revoked, beside p2's phone.
    let listed = admin.get_ok("/v1/admin/devices?member=m2");
    let state = |id: &str| {
        let d = listed.as_array().unwrap().iter().find(|d| d["id"] == id).unwrap_or_else(|| panic!("{id} in {listed}"));
        (d["member_id"].as_str().unwrap().to_string(), d["enrolled"].as_bool().unwrap(), d["revoked"].as_bool().unwrap())
    };
    assert_eq!(state(&spare_device), ("m2".to_string(), true, true));
    assert_eq!(state(&p2.device_id), ("m2".to_string(), true, false));
    assert!(listed.as_array().unwrap().iter().all(|d| d["member_id"] == "m2"), "{listed}");
    let all = admin.get_ok("/v1/admin/devices");
    assert!(all.as_array().unwrap().iter().any(|d| d["id"] == p1.device_id.as_str()), "{all}");

    // Scope of what the read API returns.
    let get_as = |token: &str, path: &str| {
        let (status, v) = get(&format!("{url}{path}"), token);
        assert_eq!(status, 200, "{path}: {v}");
        v
    };
    let coord = &tokens.coordinator;
    let households = get_as(coord, "/v1/households");
    let in_scope: Vec<String> = ids(&households);
    assert!(in_scope.iter().all(|h| households_in_coord_scope(&households, h)), "{households}");
    assert!(coord_scope.iter().all(|h| in_scope.contains(h)), "{households}");
    assert!(!in_scope.contains(&h2) && !in_scope.contains(&h4), "{households}");
    assert!(
        ids(&get_as(coord, "/v1/households?branch=b2")).iter().all(|h| *h == h3),
        "b2 narrowed to the coordinator's c3"
    );
    assert_eq!(ids(&get_as(coord, "/v1/households?community=c1")).iter().filter(|h| **h == h2).count(), 0);
    assert_eq!(sorted(ids(&get_as(coord, "/v1/visits"))), sorted(vec![v1.clone(), v3.clone()]));
    assert!(ids(&get_as(coord, "/v1/visits?member=m2")).iter().all(|v| *v == v3), "m2's visit on h2 is outside");
    assert_eq!(ids(&get_as(coord, "/v1/issues")), vec![i1.clone()]);
    assert_eq!(ids(&get_as(coord, "/v1/issues?community=c1")), vec![i1.clone()], "c1 narrowed to branch b1");
    let stats = get_as(coord, "/v1/stats");
    assert_eq!(stats["visits"], 2, "{stats}");
    assert_eq!(stats["households_assigned"], 5, "h1, h3, h5 and the two the admin added in b1: {stats}");
    let other = get_as(coord, "/v1/stats?branch=b2&community=c1");
    assert_eq!(other["visits"], 0, "nothing of another scope leaks into statistics: {other}");
    assert_eq!(other["households_assigned"], 0, "{other}");
    // The admin sees everything.
    let all = get_as(&admin_token, "/v1/visits");
    assert_eq!(sorted(ids(&all)), sorted(vec![v1, v2, v3, v4]));
    assert_eq!(sorted(ids(&get_as(&admin_token, "/v1/issues"))), sorted(vec![i1, i2]));

    // Enrolment: a code works once; a wrong or used code is refused; a code of a device
    // revoked before enrolling is refused.
    let e = admin.ok("/v1/admin/devices", json!({"member_id": "m1"}));
    let code = e["enrolment_code"].as_str().unwrap().to_string();
    let enrol = |code: &str| {
        http().post(format!("{url}/v1/enrol")).json(&json!({"code": code})).send().unwrap().status().as_u16()
    };
    assert_eq!(enrol("AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GG"), 400);
    assert_eq!(enrol(&code), 200);
    assert_eq!(enrol(&code), 400, "a code is used once");
    let e = admin.ok("/v1/admin/devices", json!({"member_id": "m1"}));
    admin.revoke(e["device_id"].as_str().unwrap());
    assert_eq!(enrol(e["enrolment_code"].as_str().unwrap()), 400, "a revoked device cannot enrol");

    // A revoked phone's sync gets 401 through the real client, and keeps its changes.
    let extra = p1.replica.record_visit(&new_visit(&h1, 9_000, "吊销之后")).unwrap().id;
    admin.revoke(&p1.device_id);
    match p1.sync(&server) {
        Err(Error::Server { status: 401, .. }) => {}
        other => panic!("a revoked device's sync: {other:?}"),
    }
    assert!(p1.replica.visit(&extra).is_ok());
    assert!(p1.replica.pending_changes().unwrap().iter().any(|c| c.household_id == h1), "the change is kept");
    assert!(!admin.visit_ids().contains(&extra));

    server.assert_sound();
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A household row of the coordinator's list is in branch b1 or community c3.
fn households_in_coord_scope(list: &Value, id: &str) -> bool {
    list.as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == id)
        .is_some_and(|h| h["branch_id"] == "b1" || h["community_id"] == "c3")
}

#[test]
fn metrics_ask_for_their_token_when_one_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let admin_token = create_admin(&data);
    let server = Server::start_with(&data, "127.0.0.1:0", &["--metrics-token", "scrape-secret-1"]);
    let metrics = |token: Option<&str>| {
        let mut r = http().get(format!("{}/metrics", server.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        if status == 200 {
            let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
        }
        (status, r.text().unwrap())
    };
    // Syncs refused for their token and for their body, and one answered.
    assert_eq!(raw_sync(&server.url, None, vec![1, 2, 3]).0, 401);
    assert_eq!(raw_sync(&server.url, Some(&admin_token), vec![1, 2, 3]).0, 400);
    let answered = raw_sync(&server.url, Some(&admin_token), doorstep_core::sync::protocol::encode(&empty_sync_request()));
    assert_eq!(answered.0, 200, "{}", answered.1);
    // The token as chosen: not forgiven its case or dashes, as an enrolment code is.
    for token in [None, Some("wrong"), Some(admin_token.as_str()), Some("SCRAPE-SECRET-1"), Some("scrapesecret1")] {
        let (status, body) = metrics(token);
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(!body.contains("sync_requests"), "{body}");
    }
    let (status, body) = metrics(Some("scrape-secret-1"));
    assert_eq!(status, 200, "{body}");
    assert_openmetrics(&body);
    for sample in [
        "\ndoorstep_sync_requests_total 1\n",
        "\ndoorstep_sync_refused_total{status=\"401\"} 1\n",
        "\ndoorstep_sync_refused_total{status=\"400\"} 1\n",
        "\ndoorstep_compactions_due 0\n",
    ] {
        assert!(body.contains(sample), "{sample:?} in {body}");
    }
    let (status, _) = get(&format!("{}/healthz", server.url), "");
    assert_eq!(status, 200, "health stays open");
}

/// The OpenMetrics text format, as Prometheus reads it: every sample belongs to a family
/// its `# TYPE` line declared (a counter's samples end in `_total`), every value is a
/// number, and the text ends with `# EOF`.
fn assert_openmetrics(body: &str) {
    assert!(body.ends_with("# EOF\n"), "{body}");
    let mut families: Vec<(String, String)> = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty() && *l != "# EOF") {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declared.split_once(' ').unwrap_or_else(|| panic!("{line}"));
            families.push((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let (name_and_labels, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample: {line}"));
        assert!(value.parse::<f64>().is_ok(), "a number: {line}");
        let name = name_and_labels.split('{').next().unwrap();
        let family = families.iter().find(|(family, kind)| {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_count", "_sum", "_created"],
                _ => &[""],
            };
            suffixes.iter().any(|suffix| name.strip_suffix(suffix) == Some(family.as_str()))
        });
        assert!(family.is_some(), "{name} belongs to no declared family: {body}");
    }
    assert!(families.len() >= 10, "{families:?}");
}
