//! The README's first command, `serve --demo`, real process: a newcomer sees merged data
//! at once. The printed coordinator token and command answer with the demo district's
//! statistics; a printed enrolment code gives a phone its member's households, with
//! their visits and problems; started again, the server seeds nothing more.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// The value printed after `label` on one of `server`'s startup lines.
fn printed_after<'a>(server: &'a Server, label: &str) -> &'a str {
    let line = server.printed.iter().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label} in {:?}", server.printed));
    line.trim_start()[label.len()..].split_whitespace().next().unwrap()
}

#[test]
fn the_demo_district_answers_at_once_and_is_seeded_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let mut server = Server::start_with(&data, "127.0.0.1:0", &["--demo"]);
    assert!(server.printed.iter().any(|l| l.contains("3 branches, 3 communities, 6 members, 12 households")), "{:?}", server.printed);

    // The command it prints names this server and a coordinator's token that works.
    let coordinator = printed_after(&server, "coordinator token:").to_string();
    let hint = server.printed.iter().find(|l| l.contains("try: curl")).expect("a command to try");
    assert!(hint.ends_with(&format!("{}/v1/stats", server.url)) && hint.contains(&coordinator), "{hint}");
    let (status, stats) = get(&format!("{}/v1/stats", server.url), &coordinator);
    assert_eq!(status, 200, "{stats}");
    // The coordinator looks after two of the three branches: 8 of the 12 households.
    assert_eq!((stats["households_assigned"].as_u64(), stats["visits"].as_u64()), (Some(8), Some(8)), "{stats}");
    let open: u64 = stats["by_branch"].as_array().unwrap().iter().map(|b| b["open_issues"].as_u64().unwrap()).sum();
    assert!(open > 0, "problems to follow: {stats}");
    let admin = printed_after(&server, "admin token:").to_string();
    let (status, org) = get(&format!("{}/v1/admin/organisation", server.url), &admin);
    assert_eq!((status, ids(&org["members"]).len()), (200, 8), "6 members, the coordinator, the admin: {org}");

    // A member's phone, enrolled with the printed code.
    let code = printed_after(&server, "enrolment code for m-01:").to_string();
    let r = http().post(format!("{}/v1/enrol", server.url)).json(&json!({"code": code})).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let enrolled: Value = r.json().unwrap();
    let phone_dir = tempfile::tempdir().unwrap();
    let device = (enrolled["device_id"].as_str().unwrap().to_string(), enrolled["token"].as_str().unwrap().to_string());
    let phone = Phone::new(phone_dir.path(), "m-01", "m-01", device);
    phone.sync(&server).unwrap();
    let households = phone.household_ids();
    assert_eq!(households.len(), 2, "m-01's two households");
    for h in &households {
        let visits = phone.replica.visits(h).unwrap();
        assert_eq!(visits.len(), 1);
        assert!(visits[0].notes.contains("招生方案"), "{:?}", visits[0]);
    }
    assert_eq!(phone.replica.issues(&households[0]).unwrap().len() + phone.replica.issues(&households[1]).unwrap().len(), 1);

    // Started again on the same store: nothing seeded twice, the same district.
    assert!(server.stop(Duration::from_secs(30)).is_some());
    let server = Server::start_with(&data, "127.0.0.1:0", &["--demo"]);
    assert!(server.printed.iter().any(|l| l.contains("already has data; not seeding")), "{:?}", server.printed);
    let (status, again) = get(&format!("{}/v1/stats", server.url), &coordinator);
    assert_eq!((status, again["households_assigned"].as_u64(), again["visits"].as_u64()), (200, Some(8), Some(8)));
    server.assert_sound();
}
