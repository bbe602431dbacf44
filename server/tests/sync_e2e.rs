//! End to end, real processes: an admin sets up a district; phones record offline,
//! including on the same household; they sync in random orders; the coordinator API shows
//! the merged result and every phone converges. Two syncs of one phone at once run one
//! after the other.

mod support;
use doorstep_core::*;
use support::*;

#[test]
fn three_phones_record_offline_sync_in_random_orders_and_converge() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let admin_token = create_admin(&data);
    let server = Server::start(&data);
    let admin = Admin { server: &server, token: admin_token };
    admin.branch("b1");
    admin.branch("b2");
    admin.community("c1");
    admin.community("c2");
    for (m, b) in [("m1", "b1"), ("m2", "b1"), ("m3", "b2")] {
        admin.member(m, b);
    }
    admin.coordinator("coord", &["b1"], &["c2"]);
    let shared = admin.household("王", "c1", "b1", &["m1", "m2"]);
    let own1 = admin.household("李", "c1", "b1", &["m1"]);
    let own3 = admin.household("张", "c2", "b2", &["m3"]);
    let _outside = admin.household("陈", "c1", "b2", &[]);

    let phones: Vec<Phone> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| Phone::new(dir.path(), m, m, admin.device(m)))
        .collect();
    for p in &phones {
        p.sync(&server).unwrap();
    }
    assert_eq!(phones[0].replica.list_households().unwrap().len(), 2);
    assert_eq!(phones[1].replica.list_households().unwrap().len(), 1);
    assert_eq!(phones[2].replica.list_households().unwrap().len(), 1);

    // Offline: m1 and m2 both visit the shared household and edit the same note;
    // m1 raises an issue; m3 visits their own.
    let v1 = phones[0].replica.record_visit(&new_visit(&shared, 1_000, "张老师上门")).unwrap().id;
    let v2 = phones[1].replica.record_visit(&new_visit(&shared, 2_000, "李老师电话")).unwrap().id;
    phones[0].replica.record_visit(&new_visit(&own1, 3_000, "走访")).unwrap();
    let issue = phones[0].replica.raise_issue(&NewIssue {
        household_id: shared.clone(),
        visit_id: Some(v1.clone()),
        category: IssueCategory::Enrolment,
        title: "现场确认材料".into(),
        description: "不清楚要带哪些材料".into(),
        urgency: Urgency::High,
        assignee: None,
        due_on: Some("2026-12-01".into()),
    }).unwrap().id;
    phones[2].replica.record_visit(&new_visit(&own3, 4_000, "走访")).unwrap();

    // Random orders, several rounds.
    let mut seed = 0x2545F4914F6CDD1Du64;
    for _ in 0..4 {
        let mut order = vec![0, 1, 2];
        for i in (1..3).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        for i in order {
            phones[i].sync(&server).unwrap();
        }
    }
    for p in &phones {
        assert!(p.replica.pending_changes().unwrap().is_empty(), "everything acknowledged");
    }
    let json_a = phones[0].replica.household_json(&shared).unwrap();
    let json_b = phones[1].replica.household_json(&shared).unwrap();
    assert_eq!(json_a, json_b, "the phones sharing a household converge");
    let visits: Vec<String> = phones[1].replica.visits(&shared).unwrap().into_iter().map(|v| v.id).collect();
    assert_eq!(visits, vec![v1.clone(), v2.clone()]);
    assert_eq!(phones[1].replica.issue(&issue).unwrap().title, "现场确认材料");

    // The coordinator (branch b1, community c2) sees the merged result of their scope.
    let (_, coord_token) = admin.device("coord");
    let (status, stats) = get(&format!("{}/v1/stats?overdue_on=2026-12-10", server.url), &coord_token);
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["visits"], 4, "{stats}");
    assert_eq!(stats["households_assigned"], 3);
    assert_eq!(stats["households_visited"], 3);
    let (_, issues) = get(&format!("{}/v1/issues?overdue_on=2026-12-10", server.url), &coord_token);
    assert_eq!(issues.as_array().unwrap().len(), 1);
    assert_eq!(issues[0]["id"], issue.as_str());
    let (_, hh) = get(&format!("{}/v1/households", server.url), &coord_token);
    let ids: Vec<&str> = hh.as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "b1's two households and c2's one, not the b2/c1 one: {hh}");
}

/// Posts through reqwest; each post is counted, and held while the gate is closed.
struct Gated {
    inner: ReqwestTransport,
    posts: std::sync::atomic::AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl Gated {
    fn new(open: bool) -> Gated {
        let permits = if open { tokio::sync::Semaphore::MAX_PERMITS } else { 0 };
        Gated { inner: ReqwestTransport::default(), posts: Default::default(), gate: tokio::sync::Semaphore::new(permits) }
    }

    fn posts(&self) -> usize {
        self.posts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl SyncTransport for Gated {
    async fn post(&self, request: TransportRequest) -> std::result::Result<TransportResponse, TransportError> {
        self.posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _open = self.gate.acquire().await.expect("the gate stays");
        self.inner.post(request).await
    }
}

#[test]
fn two_syncs_of_one_phone_at_once_run_one_after_the_other() {
    // A background sync is under way (its first request held on the way) when the member
    // pulls to refresh: the second sync waits, then finds nothing new, instead of sending
    // the same position and receiving every household a second time.
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1"]);
    let households: Vec<String> = ["一", "二", "三"].iter().map(|f| admin.household(f, "c1", "b1", &["m1"])).collect();
    let phone = district.phone("m1", "m1");
    let (background, refresh) = (Gated::new(false), Gated::new(true));
    let url = district.server.url.clone();
    let options = SyncOptions::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let under_way = || async {
        while background.posts() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    let (first, second) = rt.block_on(async {
        let first = sync_with(&phone.replica, &background, &url, &phone.token, &options);
        let second = async {
            under_way().await;
            sync_with(&phone.replica, &refresh, &url, &phone.token, &options).await
        };
        let watch = async {
            under_way().await;
            // Time enough for the refresh to post, were it not waiting.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let waiting = (background.posts(), refresh.posts());
            background.gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS);
            waiting
        };
        let (first, second, waiting) = tokio::join!(first, second, watch);
        assert_eq!(waiting, (1, 0), "the refresh waits for the background sync, sending nothing");
        (first.unwrap(), second.unwrap())
    });
    let mut received = first.households_changed.clone();
    received.sort();
    let mut expected = households.clone();
    expected.sort();
    assert_eq!(received, expected, "{first:?}");
    assert_eq!((second.round_trips, second.households_changed.len()), (1, 0), "then nothing new: {second:?}");
    assert_eq!(phone.replica.list_households().unwrap().len(), 3);
}

#[test]
fn a_household_unreadable_on_the_phone_is_rebuilt_from_the_servers_copy_and_sync_goes_on() {
    // One household's stored document on m1's phone is damaged (a disk error, a bug). The
    // server's answers bring changes to it: the phone cannot apply them, but it takes the
    // rest of the answer, asks for the household whole and rebuilds it, instead of failing
    // every sync from then on.
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1", "m2"]);
    let damaged = admin.household("坏", "c1", "b1", &["m1", "m2"]);
    let other = admin.household("好", "c1", "b1", &["m1"]);
    let device = admin.device("m1");
    let (p2, first_visit) = {
        let p1 = Phone::new(district.dir.path(), "m1", "m1", device.clone());
        p1.sync(&district.server).unwrap();
        let first = p1.replica.record_visit(&new_visit(&damaged, 1_000, "损坏前的走访")).unwrap().id;
        p1.sync(&district.server).unwrap();
        let p2 = district.phone("m2", "m2");
        p2.sync(&district.server).unwrap();
        (p2, first)
    };
    // And one visit m1 recorded there before the damage, not sent yet.
    let unsent = {
        let p1 = Phone::new(district.dir.path(), "m1", "m1", device.clone());
        p1.replica.record_visit(&new_visit(&damaged, 1_500, "损坏前未同步的走访")).unwrap().id
    };
    let file = district.dir.path().join("m1.sqlite3");
    let conn = rusqlite::Connection::open(&file).unwrap();
    let n = conn
        .execute("UPDATE doc_chunks SET data = substr(data, 1, length(data) / 2) WHERE household_id = ?1", [&damaged])
        .unwrap();
    assert!(n >= 1);
    drop(conn);
    let p1 = Phone::new(district.dir.path(), "m1", "m1", device);
    assert!(p1.replica.visits(&damaged).is_err(), "unreadable");
    // m2 records on it; m1 records on the other household, not yet sent.
    let from_m2 = p2.replica.record_visit(&new_visit(&damaged, 2_000, "二号的走访")).unwrap().id;
    p2.sync(&district.server).unwrap();
    let on_other = p1.replica.record_visit(&new_visit(&other, 3_000, "另一户的走访")).unwrap().id;

    let report = p1.sync(&district.server).unwrap();
    assert_eq!(report.accepted, 2, "{report:?}");
    assert!(p1.replica.pending_changes().unwrap().is_empty());
    let mut on_damaged = p1.visit_ids(&damaged);
    on_damaged.sort();
    let mut expected = vec![first_visit, unsent, from_m2];
    expected.sort();
    assert_eq!(on_damaged, expected, "rebuilt from the server's copy, with the visit the phone sent");
    assert_eq!(p1.visit_ids(&other), [on_other]);
    p2.sync(&district.server).unwrap();
    assert_eq!(p1.replica.household_json(&damaged).unwrap(), p2.replica.household_json(&damaged).unwrap());
    drop(admin);
    district.server.assert_sound();
}
