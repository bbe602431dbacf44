//! The coordinator's read API on a real server, against figures worked out by hand: a
//! period's days in China time (UTC+8) at both ends, coverage over assigned households
//! that are not archived, visits per member each counted once (recorder and those who
//! took part), deleted records left out, open and overdue issues (due today is not
//! overdue), the median time to resolve over an even count; lists read page by page,
//! following their `Link` headers, give the whole list once; and filters that mean
//! nothing, are misspelt or are written loosely refused with a bilingual 400.

mod support;
use doorstep_core::*;
use serde_json::Value;
use support::*;

/// 2026-03-01 00:00 in China, in milliseconds since the epoch (2026-02-28 16:00 UTC).
const MARCH_1_CST: i64 = 1_772_294_400_000;
/// 2026-04-01 00:00 in China.
const APRIL_1_CST: i64 = MARCH_1_CST + 31 * 86_400_000;

fn visit(phone: &Phone, household: &str, at: i64, visitors: &[&str]) -> String {
    let mut v = new_visit(household, at, "走访");
    v.visitors = visitors.iter().map(|m| m.to_string()).collect();
    phone.replica.record_visit(&v).unwrap().id
}

fn issue(phone: &Phone, household: &str, title: &str, due_on: &str) -> String {
    let mut new = new_issue(household, title);
    new.due_on = Some(due_on.into());
    phone.replica.raise_issue(&new).unwrap().id
}

fn group<'a>(stats: &'a Value, list: &str, id: &str) -> &'a Value {
    stats[list].as_array().unwrap().iter().find(|g| g["id"] == id).unwrap_or_else(|| panic!("{list} {id}: {stats}"))
}

/// (households assigned, visited, visits, open issues, overdue issues) of a group.
fn counts(g: &Value) -> (u64, u64, u64, u64, u64) {
    let n = |k: &str| g[k].as_u64().unwrap_or_else(|| panic!("{k}: {g}"));
    (n("households_assigned"), n("households_visited"), n("visits"), n("open_issues"), n("overdue_issues"))
}

#[test]
fn statistics_and_lists_count_what_a_coordinator_expects() {
    let district = District::start();
    let admin = district.admin();
    for b in ["b1", "b2"] {
        admin.branch(b);
    }
    for c in ["c1", "c2"] {
        admin.community(c);
    }
    for (m, b) in [("m1", "b1"), ("m2", "b1"), ("m3", "b2")] {
        admin.member(m, b);
    }
    admin.coordinator("coord", &["b1"], &[]);
    let h1 = admin.household("一", "c1", "b1", &["m1"]);
    let h2 = admin.household("二", "c2", "b1", &["m1", "m2"]);
    let h3 = admin.household("三", "c2", "b2", &["m3"]);
    let _unassigned = admin.household("四", "c1", "b1", &[]);
    let h5 = admin.household("五", "c1", "b1", &["m2"]);
    let [m1, m2, m3, coord] = ["m1", "m2", "m3", "coord"].map(|m| district.phone(m, m));
    for p in [&m1, &m2, &m3, &coord] {
        p.sync(&district.server).unwrap();
    }

    // March, China time. m1 visits h1 at its first millisecond with m2 (named twice) and
    // the millisecond before (February); a visit m1 deletes; m2 visits h2 at March's last
    // millisecond and at April's first, and h5, archived later; m3 visits h3 in April.
    let in_march = visit(&m1, &h1, MARCH_1_CST, &["m1", "m2", "m2"]);
    visit(&m1, &h1, MARCH_1_CST - 1, &[]);
    let deleted = visit(&m1, &h2, MARCH_1_CST + 86_400_000, &[]);
    m1.replica.delete_visit(&deleted).unwrap();
    visit(&m2, &h2, APRIL_1_CST - 1, &[]);
    visit(&m2, &h2, APRIL_1_CST, &[]);
    visit(&m2, &h5, MARCH_1_CST + 5 * 86_400_000, &[]);
    visit(&m3, &h3, APRIL_1_CST, &[]);
    assert_eq!(m1.replica.visit(&in_march).unwrap().visitors, vec!["m1", "m2"], "each member kept once");

    // Issues: due the day before, on and after 2026-03-10 (the one due after is referred:
    // still active); one m3 resolves although due long before; four resolved for the
    // median, raised a little apart so their times differ.
    let overdue = issue(&m1, &h1, "逾期", "2026-03-09");
    let due_today = issue(&m1, &h1, "今天到期", "2026-03-10");
    let referred = issue(&m1, &h1, "已转街道", "2026-03-11");
    m1.replica.transition_issue(&referred, &IssueStatus::Referred, "转街道").unwrap();
    let mut resolved = vec![issue(&m3, &h3, "已解决", "2026-03-01")];
    for title in ["甲", "乙", "丙"] {
        std::thread::sleep(std::time::Duration::from_millis(30));
        resolved.push(issue(&m2, &h2, title, "2026-03-01"));
    }
    for (i, id) in resolved.iter().enumerate() {
        let phone = if i == 0 { &m3 } else { &m2 };
        phone.replica.transition_issue(id, &IssueStatus::Resolved, "已解决").unwrap();
    }
    let loose = m1.replica.raise_issue(&NewIssue { due_on: Some("2026-3-9".into()), ..new_issue(&h1, "松散日期") });
    assert!(matches!(loose, Err(Error::InvalidInput { .. })), "a date must be written YYYY-MM-DD: {loose:?}");
    for p in [&m1, &m2, &m3] {
        p.sync(&district.server).unwrap();
    }
    coord.sync(&district.server).unwrap();
    coord.replica.update_household(&h5, &HouseholdUpdate { archived: Some(true), ..Default::default() }).unwrap();
    coord.sync(&district.server).unwrap();

    let march = "from=2026-03-01&to=2026-03-31&overdue_on=2026-03-10";
    let stats = admin.get_ok(&format!("/v1/stats?{march}"));
    // Assigned and not archived: h1, h2, h3; visited in March: h1, h2. Visits in March:
    // h1's first, h2's last millisecond, h5's (archived since, but made).
    let whole = counts(&stats);
    assert_eq!(whole, (3, 2, 3, 3, 1), "{stats}");
    assert!((stats["coverage"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12, "{stats}");
    assert_eq!(counts(group(&stats, "by_branch", "b1")), (2, 2, 3, 3, 1), "{stats}");
    assert_eq!(counts(group(&stats, "by_branch", "b2")), (1, 0, 0, 0, 0), "{stats}");
    assert_eq!(counts(group(&stats, "by_community", "c1")), (1, 1, 2, 3, 1), "{stats}");
    assert_eq!(counts(group(&stats, "by_community", "c2")), (2, 1, 1, 0, 0), "{stats}");
    assert_eq!(
        stats["visits_by_member"],
        serde_json::json!([{"member_id": "m2", "visits": 3}, {"member_id": "m1", "visits": 1}]),
        "m2 took part in h1's visit once, made h2's and h5's; m1's deleted visit and February's do not count"
    );
    assert_eq!(stats["median_hours_to_resolve"], Value::Null, "nothing was resolved in March 2026");

    // The lists agree with the figures.
    let listed = |path: &str| ids(&admin.get_ok(path));
    assert_eq!(listed("/v1/issues?overdue_on=2026-03-10"), vec![overdue.clone()]);
    assert_eq!(listed("/v1/issues?status=active"), vec![overdue.clone(), due_today.clone(), referred.clone()]);
    assert_eq!(listed("/v1/issues?status=referred"), vec![referred.clone()]);
    assert_eq!(listed("/v1/issues?status=resolved").len(), 4);
    assert_eq!(listed("/v1/visits?from=2026-03-01&to=2026-03-31").len(), 3);
    assert_eq!(listed("/v1/visits?member=m2&from=2026-03-01&to=2026-03-31").len(), 3);
    assert_eq!(listed("/v1/visits?to=2026-02-28").len(), 1, "February's last millisecond, China time");
    let households = admin.get_ok("/v1/households?from=2026-03-01&to=2026-03-31");
    let row = |id: &str| households.as_array().unwrap().iter().find(|h| h["id"] == id).unwrap().clone();
    assert_eq!((row(&h1)["visits"].as_u64(), row(&h2)["visits"].as_u64()), (Some(1), Some(1)), "{households}");
    assert_eq!(row(&h5)["archived"], true);

    // The median over all four resolutions: the mean of the middle two, as the list gives
    // their times.
    let mut hours: Vec<f64> = admin
        .get_ok("/v1/issues?status=resolved")
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["resolved_at_ms"].as_i64().unwrap() - i["raised_at_ms"].as_i64().unwrap()) as f64 / 3_600_000.0)
        .collect();
    hours.sort_by(f64::total_cmp);
    assert!(hours[0] < hours[3], "{hours:?}");
    let all_time = admin.get_ok("/v1/stats?overdue_on=2026-03-10");
    let median = all_time["median_hours_to_resolve"].as_f64().unwrap();
    assert!((median - (hours[1] + hours[2]) / 2.0).abs() < 1e-9, "{median} from {hours:?}");
    assert_eq!(all_time["visits"], 6, "every visit not deleted: {all_time}");

    // A coordinator of b1 sees b1 alone.
    let scoped = get(&format!("{}/v1/stats?{march}", district.server.url), &coord.token);
    assert_eq!(scoped.0, 200, "{}", scoped.1);
    assert_eq!(counts(&scoped.1), (2, 2, 3, 3, 1), "{}", scoped.1);
    assert_eq!(scoped.1["by_branch"].as_array().unwrap().len(), 1);
}

#[test]
fn filters_that_mean_nothing_are_misspelt_or_written_loosely_are_refused() {
    let district = District::start();
    let admin = district.admin();
    admin.branch("b1");
    for path in [
        "/v1/stats?today=2026-03-10",
        "/v1/stats?overdue_on=2026-3-10",
        "/v1/stats?status=open",
        "/v1/issues?overdue_on=%202026-03-10",
        "/v1/issues?overdue_on=+2026-03-10",
        "/v1/issues?status=bogus",
        "/v1/issues?overdue=true",
        "/v1/visits?status=open",
        "/v1/visits?from=2026-04-01&to=2026-03-01",
        "/v1/households?overdue_on=2026-03-10",
    ] {
        let (status, body) = get(&format!("{}{path}", district.server.url), &admin.token);
        assert_eq!(status, 400, "{path}: {body}");
        let message = body["error"].as_str().unwrap_or_else(|| panic!("{path}: {body}"));
        assert!(message.contains(" / ") && message.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)), "{path}: {message}");
    }
    for path in ["/v1/stats?overdue_on=2026-03-10&from=2026-03-10&to=2026-03-10", "/v1/issues?status=active"] {
        let (status, body) = get(&format!("{}{path}", district.server.url), &admin.token);
        assert_eq!(status, 200, "{path}: {body}");
    }
}

/// Every page of `path` (which asks for a limit), following the `Link` headers: the pages.
fn pages(district: &District, path: &str) -> Vec<Vec<Value>> {
    let mut next = Some(path.to_string());
    let mut pages = Vec::new();
    while let Some(path) = next.take() {
        let r = http().get(format!("{}{path}", district.server.url)).bearer_auth(&district.admin_token).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        next = r.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            let (target, rel) = link.split_once("; ").unwrap();
            assert_eq!(rel, "rel=\"next\"", "{link}");
            target.trim_start_matches('<').trim_end_matches('>').to_string()
        });
        pages.push(r.json::<Value>().unwrap().as_array().unwrap().clone());
        assert!(pages.len() <= 20, "the pages end");
    }
    pages
}

#[test]
fn lists_read_page_by_page_give_each_row_once_in_order() {
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1", "c2"], &["m1"]);
    // Two households of one family name in one community: the order goes on to their ids.
    let households: Vec<String> = [("王", "c1"), ("王", "c1"), ("李", "c1"), ("张", "c2"), ("陈", "c2")]
        .iter()
        .map(|(family, community)| admin.household(family, community, "b1", &["m1"]))
        .collect();
    let m1 = district.phone("m1", "m1");
    m1.sync(&district.server).unwrap();
    // Seven visits, two of them starting at the same millisecond; three issues.
    for (i, h) in households.iter().enumerate() {
        visit(&m1, h, MARCH_1_CST + i as i64 * 3_600_000, &[]);
    }
    visit(&m1, &households[0], MARCH_1_CST, &[]);
    visit(&m1, &households[1], MARCH_1_CST + 86_400_000, &[]);
    for h in &households[..3] {
        issue(&m1, h, "问题", "2026-03-10");
    }
    m1.sync(&district.server).unwrap();

    for (list, limit, expected_pages) in [("households", 2, 3), ("visits", 2, 4), ("visits", 7, 1), ("issues", 1, 3)] {
        let whole = admin.get_ok(&format!("/v1/{list}"));
        let pages = pages(&district, &format!("/v1/{list}?branch=b1&limit={limit}"));
        assert_eq!(pages.len(), expected_pages, "{list} by {limit}");
        assert!(pages.iter().all(|p| !p.is_empty() && p.len() <= limit), "{list}: {pages:?}");
        let joined: Vec<Value> = pages.into_iter().flatten().collect();
        assert_eq!(Value::Array(joined), whole, "{list} by {limit}: each row once, in the list's order");
    }
    // A filter stays with the pages that follow.
    let march_first = pages(&district, "/v1/visits?from=2026-03-01&to=2026-03-01&limit=2");
    assert_eq!(march_first.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 2], "{march_first:?}");

    let visits_page = http()
        .get(format!("{}/v1/visits?limit=1", district.server.url))
        .bearer_auth(&district.admin_token)
        .send()
        .unwrap();
    let link = visits_page.headers().get("link").unwrap().to_str().unwrap().to_string();
    let visits_cursor = link.split("after=").nth(1).unwrap().split('>').next().unwrap().to_string();
    for path in [
        "/v1/households?limit=0".to_string(),
        format!("/v1/households?limit={}", 10_001),
        "/v1/visits?limit=two".to_string(),
        "/v1/visits?after=00".to_string(),
        "/v1/issues?limit=2&after=zz".to_string(),
        format!("/v1/households?limit=2&after={visits_cursor}"),
        "/v1/stats?limit=5".to_string(),
    ] {
        let (status, body) = get(&format!("{}{path}", district.server.url), &district.admin_token);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains(" / ")), "{path}: {body}");
    }
}
