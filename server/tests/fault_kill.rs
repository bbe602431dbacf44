//! SIGKILL the server at random moments while several phones sync concurrently, real
//! processes: four member phones and a coordinator's, each on its own thread, record
//! visits and sync in a loop; the server is killed at least ten times (and, between the
//! kills, stopped with SIGTERM a few times: it must exit with success within 15 s,
//! answering the syncs in flight) and restarted on the same data directory (alternately on the same port and on a new one: phones just
//! use the new URL). During the kill window syncs fail with `Error::Network` (or
//! `Error::Server`) only. After every restart, every visit acknowledged before the kill
//! is on the server. At the end, with everything synced: no acknowledged change lost,
//! nothing duplicated (visit ids unique, counts exact, on every phone and in the
//! coordinator API), every phone sharing a household holds the same document.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use doorstep_core::{Error, HouseholdUpdate, SyncOptions};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use support::*;

/// At least this many kills (SIGKILL).
const KILLS: u32 = 12;
/// And this many stops (SIGTERM): every fourth time the server goes down.
const STOPS: u32 = 4;

struct Shared {
    url: RwLock<String>,
    stop: AtomicBool,
    /// Visits some phone recorded and the server acknowledged (the phone's outbox was empty
    /// after a successful sync).
    acknowledged: Mutex<BTreeSet<String>>,
    syncs_ok: AtomicU32,
    syncs_failed: AtomicU32,
    /// Failures of a sync whose connection was established: the kill hit it in flight.
    killed_in_flight: AtomicU32,
}

/// What one phone's thread did.
struct Run {
    phone: Phone,
    /// (household, visit) in the order recorded.
    recorded: Vec<(String, String)>,
    /// Errors other than Network or a 5xx: must stay empty.
    unexpected: Vec<String>,
}

fn options() -> SyncOptions {
    SyncOptions { timeout: Duration::from_secs(10), ..SyncOptions::default() }
}

fn run_phone(phone: Phone, own: Vec<String>, records: bool, seed: u64, shared: Arc<Shared>) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let member = phone.replica.member_id();
    let mut run = Run { phone, recorded: Vec::new(), unexpected: Vec::new() };
    let started = Instant::now();
    let mut round = 0i64;
    while !shared.stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
        round += 1;
        if records && !own.is_empty() {
            let h = &own[rng.random_range(0..own.len())];
            let v = run.phone.replica.record_visit(&new_visit(h, round, &format!("{member} 第{round}次"))).unwrap();
            run.recorded.push((h.clone(), v.id));
            if rng.random_range(0..5) == 0 {
                let notes = format!("{member} 的备注 {round}");
                run.phone
                    .replica
                    .update_household(h, &HouseholdUpdate { notes: Some(notes), ..Default::default() })
                    .unwrap();
            }
        }
        let url = shared.url.read().unwrap().clone();
        match run.phone.sync_with(&url, &options()) {
            Ok(_) => {
                shared.syncs_ok.fetch_add(1, Ordering::Relaxed);
                if run.phone.replica.pending_changes().unwrap().is_empty() {
                    shared.acknowledged.lock().unwrap().extend(run.recorded.iter().map(|(_, v)| v.clone()));
                }
            }
            Err(Error::Network { reason }) => {
                shared.syncs_failed.fetch_add(1, Ordering::Relaxed);
                if !reason.contains("no connection") {
                    shared.killed_in_flight.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(Error::Server { status, .. }) if status >= 500 => {
                shared.syncs_failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => run.unexpected.push(format!("{member}: {e:?}")),
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..25)));
    }
    run
}

/// Visit ids on the server (admin scope), retrying while a restarted server settles.
fn server_visits(url: &str, token: &str) -> Vec<String> {
    let mut last = String::new();
    for _ in 0..20 {
        match http().get(format!("{url}/v1/visits")).bearer_auth(token).send() {
            Ok(r) if r.status().as_u16() == 200 => return ids(&r.json().unwrap()),
            Ok(r) => last = format!("{}", r.status()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET /v1/visits keeps failing: {last}");
}

#[test]
fn sigkill_during_concurrent_syncs_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let mut rng = rng_from_env("fault_kill");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let admin_token = create_admin(&data);
    let mut server = Server::start(&data);
    let members = ["m1", "m2", "m3", "m4"];
    let (households, devices, coord_device) = {
        let admin = Admin { server: &server, token: admin_token.clone() };
        admin.branch("b1");
        admin.community("c1");
        for m in members {
            admin.member(m, "b1");
        }
        admin.coordinator("coord", &["b1"], &[]);
        // A ring: each household shared by two members, each member on two households.
        let mut households: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for i in 0..members.len() {
            let pair = vec![members[i], members[(i + 1) % members.len()]];
            households.insert(admin.household(&format!("户{i}"), "c1", "b1", &pair), pair);
        }
        let devices: Vec<(String, String)> = members.iter().map(|m| admin.device(m)).collect();
        (households, devices, admin.device("coord"))
    };

    let shared = Arc::new(Shared {
        url: RwLock::new(server.url.clone()),
        stop: AtomicBool::new(false),
        acknowledged: Mutex::new(BTreeSet::new()),
        syncs_ok: AtomicU32::new(0),
        syncs_failed: AtomicU32::new(0),
        killed_in_flight: AtomicU32::new(0),
    });
    let mut threads = Vec::new();
    for (i, device) in devices.into_iter().enumerate() {
        let phone = Phone::new(dir.path(), members[i], members[i], device);
        phone.sync(&server).unwrap();
        let own: Vec<String> =
            households.iter().filter(|(_, m)| m.contains(&members[i])).map(|(h, _)| h.clone()).collect();
        assert_eq!(phone.household_ids(), own);
        let (seed, shared) = (rng.next_u64(), shared.clone());
        threads.push(std::thread::spawn(move || run_phone(phone, own, true, seed, shared)));
    }
    let coord = Phone::new(dir.path(), "coord", "coord", coord_device);
    let (seed, s) = (rng.next_u64(), shared.clone());
    threads.push(std::thread::spawn(move || run_phone(coord, vec![], false, seed, s)));

    // Kill at random moments; restart on the same data directory.
    let mut same_port = 0;
    let mut acked_before_kill = Vec::new();
    for k in 0..KILLS + STOPS {
        std::thread::sleep(Duration::from_millis(rng.random_range(400..1500)));
        let addr = server.addr();
        if k % 4 == 3 {
            let status = server.stop(Duration::from_secs(15));
            assert!(status.is_some_and(|s| s.success()), "stop {k}: exits with success within 15 s: {status:?}");
        } else {
            server.kill();
        }
        let acknowledged = shared.acknowledged.lock().unwrap().clone();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..200)));
        server = if k % 2 == 0 {
            match Server::try_start_with(&data, &addr, &[]) {
                Ok(s) => {
                    same_port += 1;
                    s
                }
                Err(e) => {
                    eprintln!("fault_kill: restart on {addr} failed ({e}), on a new port");
                    Server::start(&data)
                }
            }
        } else {
            Server::start(&data)
        };
        *shared.url.write().unwrap() = server.url.clone();
        // Durability: every visit acknowledged before the kill is there after it.
        let on_server: BTreeSet<String> = server_visits(&server.url, &admin_token).into_iter().collect();
        let missing: Vec<&String> = acknowledged.iter().filter(|v| !on_server.contains(*v)).collect();
        assert!(missing.is_empty(), "kill {k}: acknowledged visits lost: {missing:?}");
        acked_before_kill.push(acknowledged.len());
    }
    std::thread::sleep(Duration::from_millis(300));
    shared.stop.store(true, Ordering::Relaxed);
    let runs: Vec<Run> = threads.into_iter().map(|t| t.join().expect("a phone thread")).collect();
    let (ok, failed) = (shared.syncs_ok.load(Ordering::Relaxed), shared.syncs_failed.load(Ordering::Relaxed));
    let in_flight = shared.killed_in_flight.load(Ordering::Relaxed);
    eprintln!(
        "fault_kill: {KILLS} kills and {STOPS} stops ({same_port} restarts on the same port), {ok} syncs succeeded, {failed} failed ({in_flight} killed in flight), acknowledged before each kill: {acked_before_kill:?}"
    );
    for run in &runs {
        assert!(run.unexpected.is_empty(), "only network or server errors: {:?}", run.unexpected);
    }
    assert!(failed > 0, "some syncs hit a dead server");
    assert!(in_flight > 0, "some kills hit a sync in flight");
    assert!(same_port >= 1, "restarted on the same port at least once");
    assert!(
        acked_before_kill.windows(2).filter(|w| w[1] > w[0]).count() >= (KILLS as usize) / 3,
        "phones made progress between kills: {acked_before_kill:?}"
    );

    // Everything syncs.
    for _ in 0..5 {
        for run in &runs {
            run.phone.sync(&server).unwrap();
        }
        if runs.iter().all(|r| r.phone.replica.pending_changes().unwrap().is_empty()) {
            break;
        }
    }
    for run in &runs {
        run.phone.sync(&server).unwrap();
        let pending = run.phone.replica.pending_changes().unwrap();
        assert!(pending.is_empty(), "{}: everything acknowledged: {pending:?}", run.phone.replica.member_id());
    }

    // Nothing lost, nothing duplicated.
    let mut recorded: BTreeMap<String, Vec<String>> = households.keys().map(|h| (h.clone(), Vec::new())).collect();
    for run in &runs {
        for (h, v) in &run.recorded {
            recorded.get_mut(h).unwrap().push(v.clone());
        }
    }
    let total: usize = recorded.values().map(Vec::len).sum();
    let all: BTreeSet<&String> = recorded.values().flatten().collect();
    assert_eq!(all.len(), total, "visit ids are unique");
    let on_server = server_visits(&server.url, &admin_token);
    assert_eq!(on_server.len(), total, "the server holds each visit exactly once");
    assert_eq!(on_server.iter().collect::<BTreeSet<_>>(), all, "the server holds exactly the visits recorded");
    let coord = &runs[members.len()].phone;
    for (h, sharing) in &households {
        let mut expected = recorded[h].clone();
        expected.sort();
        let reference = coord.replica.household_json(h).unwrap();
        let mut on_coord = coord.visit_ids(h);
        on_coord.sort();
        assert_eq!(on_coord, expected, "the coordinator holds exactly the visits of {h}");
        for (i, m) in members.iter().enumerate() {
            if sharing.contains(m) {
                let mut on_phone = runs[i].phone.visit_ids(h);
                on_phone.sort();
                assert_eq!(on_phone, expected, "{m} holds exactly the visits of {h}");
                assert_eq!(runs[i].phone.replica.household_json(h).unwrap(), reference, "{m} converged on {h}");
            }
        }
    }
    let acknowledged = shared.acknowledged.lock().unwrap();
    assert!(acknowledged.iter().all(|v| all.contains(v)));
    eprintln!("fault_kill: {total} visits, all present once everywhere; {:?}", started.elapsed());
    server.assert_sound();
}
