//! Connections cut in the middle of a request and in the middle of a response, real
//! processes: a small HTTP/1.1 proxy in the test sits between the phones and the server
//! and, at random, forwards only part of a request (the server never sees it whole) or
//! only part of a response (the server committed, the phone never hears it), then closes
//! both sides. Phones retry. Everything converges; nothing is lost or duplicated; the
//! coordinator's paged pulls resume. The cuts are counted, so the test knows they
//! happened.

mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doorstep_core::{Error, HouseholdUpdate, SyncOptions};
use doorstep_server::admin::CSV_COLUMNS;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use support::*;

#[derive(Default)]
struct Counts {
    connections: AtomicU32,
    requests: AtomicU32,
    cut_requests: AtomicU32,
    cut_responses: AtomicU32,
}

/// The proxy: listens on a loopback port, one thread per connection.
struct CutProxy {
    url: String,
    counts: Arc<Counts>,
    /// Cut at all (off for the final convergence).
    cutting: Arc<AtomicBool>,
    /// Fates for the next requests, before random ones.
    script: Arc<Mutex<VecDeque<Fate>>>,
}

#[derive(Clone, Copy)]
enum Fate {
    Pass,
    CutRequest,
    CutResponse,
}

impl CutProxy {
    fn start(upstream: String, seed: u64) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counts = Arc::new(Counts::default());
        let cutting = Arc::new(AtomicBool::new(true));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let (c, k, sc) = (counts.clone(), cutting.clone(), script.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                c.connections.fetch_add(1, Ordering::Relaxed);
                let (upstream, counts, cutting, rng) = (upstream.clone(), c.clone(), k.clone(), rng.clone());
                let script = sc.clone();
                std::thread::spawn(move || {
                    let _ = serve_connection(client, &upstream, &counts, &cutting, &script, &rng);
                });
            }
        });
        CutProxy { url, counts, cutting, script }
    }
}

/// One HTTP message (head and body, by Content-Length) read whole; `None` at a clean end
/// of the stream.
fn read_message(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return if buffer.is_empty() { Ok(None) } else { Err(std::io::ErrorKind::UnexpectedEof.into()) };
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding: chunked"), "the proxy handles Content-Length bodies only: {head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("a length"))
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let message: Vec<u8> = buffer.drain(..head_end + length).collect();
    Ok(Some((message, head_end)))
}

/// Where to cut a message: half the time inside the head, half inside the body.
fn cut_point(rng: &Mutex<StdRng>, len: usize, head: usize) -> usize {
    let mut rng = rng.lock().unwrap();
    if len > head + 1 && rng.next_u64().is_multiple_of(2) {
        rng.random_range(head as u64..len as u64) as usize
    } else {
        rng.random_range(1..head.max(2) as u64) as usize
    }
}

fn close(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

fn serve_connection(
    mut client: TcpStream,
    upstream: &str,
    counts: &Counts,
    cutting: &AtomicBool,
    script: &Mutex<VecDeque<Fate>>,
    rng: &Mutex<StdRng>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut server = TcpStream::connect(upstream)?;
    server.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
    while let Some((request, head)) = read_message(&mut client, &mut from_client)? {
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let scripted = script.lock().unwrap().pop_front();
        let fate = if let Some(fate) = scripted {
            fate
        } else if !cutting.load(Ordering::Relaxed) {
            Fate::Pass
        } else {
            match rng.lock().unwrap().next_u64() % 10 {
                0..=2 => Fate::CutRequest,
                3..=5 => Fate::CutResponse,
                _ => Fate::Pass,
            }
        };
        if let Fate::CutRequest = fate {
            let at = cut_point(rng, request.len(), head);
            server.write_all(&request[..at])?;
            server.flush()?;
            std::thread::sleep(Duration::from_millis(20));
            counts.cut_requests.fetch_add(1, Ordering::Relaxed);
            close(&client, &server);
            return Ok(());
        }
        server.write_all(&request)?;
        let Some((response, head)) = read_message(&mut server, &mut from_server)? else {
            close(&client, &server);
            return Ok(());
        };
        if let Fate::CutResponse = fate {
            let at = cut_point(rng, response.len(), head);
            client.write_all(&response[..at])?;
            client.flush()?;
            counts.cut_responses.fetch_add(1, Ordering::Relaxed);
            close(&client, &server);
            return Ok(());
        }
        client.write_all(&response)?;
    }
    close(&client, &server);
    Ok(())
}

/// Sync through the proxy until it succeeds; every failure must be a network error.
fn sync_retrying(phone: &Phone, url: &str, options: &SyncOptions, failures: &mut u32) {
    for _ in 0..200 {
        match phone.sync_with(url, options) {
            Ok(_) => return,
            Err(Error::Network { .. }) => *failures += 1,
            Err(e) => panic!("{}: a cut connection is a network error, not {e:?}", phone.replica.member_id()),
        }
    }
    panic!("{} never got through", phone.replica.member_id());
}

#[test]
fn connections_cut_mid_request_and_mid_response_converge_without_loss() {
    let mut rng = rng_from_env("fault_cut");
    let district = District::start();
    let (server, admin, dir) = (&district.server, district.admin(), &district.dir);
    admin.branch_b1(&["c1"], &["m1", "m2", "m3"]);
    admin.coordinator("coord", &["b1"], &[]);
    let members = ["m1", "m2", "m3"];
    let mut households: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (i, pair) in [["m1", "m2"], ["m2", "m3"], ["m3", "m1"]].iter().enumerate() {
        households.insert(admin.household(&format!("共{i}"), "c1", "b1", pair), pair.to_vec());
    }
    // Enough households for the coordinator's pulls to come in several pages.
    let mut csv = format!("{CSV_COLUMNS}\n");
    for i in 0..40 {
        // Varied text, so that documents do not compress to nothing.
        let directions: String =
            (0..400).map(|_| char::from_u32(0x4e00 + rng.random_range(0..3000) as u32).unwrap()).collect();
        csv.push_str(&format!(
            "户{i},幸福路{i}号 {directions},c1,b1,家长{i},母亲,1380000{i:04},学生{i},第一小学,三年级,non_local,\n"
        ));
    }
    let r = http()
        .post(format!("{}/v1/admin/households/import", server.url))
        .bearer_auth(&admin.token)
        .body(csv)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let proxy = CutProxy::start(server.addr(), rng.next_u64());
    let phones: Vec<Phone> = members.iter().map(|m| Phone::new(dir.path(), m, m, admin.device(m))).collect();
    let coord = Phone::new(dir.path(), "coord", "coord", admin.device("coord"));
    // Small pages: the coordinator's pulls take several round trips, each one cuttable.
    let options = SyncOptions { timeout: Duration::from_secs(20), page_bytes: 16 * 1024, ..Default::default() };
    let mut failures = 0;
    let mut recorded: BTreeMap<String, BTreeSet<String>> =
        households.keys().map(|h| (h.clone(), BTreeSet::new())).collect();
    let mut issues = BTreeSet::new();

    // The coordinator's first pull comes in pages; the second page's response is cut.
    // The first page is kept; the next sync resumes after it without sending it again.
    proxy.script.lock().unwrap().extend([Fate::Pass, Fate::CutResponse]);
    match coord.sync_with(&proxy.url, &options) {
        Err(Error::Network { .. }) => failures += 1,
        other => panic!("the second page was cut: {other:?}"),
    }
    let first_page = coord.household_ids();
    assert!(!first_page.is_empty() && first_page.len() < 43, "one page of 43 households: {}", first_page.len());
    proxy.script.lock().unwrap().extend([Fate::Pass; 8]);
    let resumed = coord.sync_with(&proxy.url, &options).unwrap();
    assert!(resumed.round_trips >= 2, "the rest came in pages too: {resumed:?}");
    assert!(
        resumed.households_changed.iter().all(|h| !first_page.contains(h)),
        "the first page was not sent again: {resumed:?}"
    );
    assert_eq!(first_page.len() + resumed.households_changed.len(), 43);
    assert_eq!(coord.household_ids().len(), 43);
    proxy.script.lock().unwrap().clear();
    for p in &phones {
        sync_retrying(p, &proxy.url, &options, &mut failures);
    }
    for round in 0..10 {
        let mut order: Vec<usize> = (0..phones.len()).collect();
        order.shuffle(&mut rng);
        for i in order {
            let phone = &phones[i];
            let own: Vec<&String> =
                households.iter().filter(|(_, m)| m.contains(&members[i])).map(|(h, _)| h).collect();
            for _ in 0..rng.random_range(1..3) {
                let h = own[rng.random_range(0..own.len())];
                let v = phone
                    .replica
                    .record_visit(&new_visit(h, round * 1000 + i as i64, &format!("第{round}轮 {}", members[i])))
                    .unwrap();
                recorded.get_mut(h).unwrap().insert(v.id);
            }
            match rng.random_range(0..4) {
                0 => {
                    let h = own[0];
                    let notes = format!("{} 第{round}轮备注", members[i]);
                    phone
                        .replica
                        .update_household(h, &HouseholdUpdate { notes: Some(notes), ..Default::default() })
                        .unwrap();
                }
                1 => {
                    issues
                        .insert(phone.replica.raise_issue(&new_issue(own[1], &format!("第{round}轮问题"))).unwrap().id);
                }
                _ => {}
            }
            sync_retrying(phone, &proxy.url, &options, &mut failures);
        }
        sync_retrying(&coord, &proxy.url, &options, &mut failures);
    }

    let cut_requests = proxy.counts.cut_requests.load(Ordering::Relaxed);
    let cut_responses = proxy.counts.cut_responses.load(Ordering::Relaxed);
    let requests = proxy.counts.requests.load(Ordering::Relaxed);
    eprintln!(
        "fault_cut: {requests} requests on {} connections, {cut_requests} cut mid-request, {cut_responses} cut mid-response, {failures} failed syncs retried",
        proxy.counts.connections.load(Ordering::Relaxed)
    );
    assert!(cut_requests >= 5, "requests were cut: {cut_requests}");
    assert!(cut_responses >= 5, "responses were cut: {cut_responses}");
    assert_eq!(failures, cut_requests + cut_responses, "every cut failed one sync, and nothing else did");

    // Without cuts, everyone syncs until quiet.
    proxy.cutting.store(false, Ordering::Relaxed);
    for _ in 0..2 {
        for p in phones.iter().chain([&coord]) {
            p.sync_with(&proxy.url, &options).unwrap();
        }
    }

    // Nothing lost, nothing duplicated, everyone converged.
    for p in phones.iter().chain([&coord]) {
        assert!(p.replica.pending_changes().unwrap().is_empty(), "{}: everything acknowledged", p.replica.member_id());
    }
    let on_server = admin.visit_ids();
    let unique: BTreeSet<&String> = on_server.iter().collect();
    assert_eq!(unique.len(), on_server.len(), "no visit twice on the server");
    let all: BTreeSet<&String> = recorded.values().flatten().collect();
    assert_eq!(unique, all, "the server has exactly the visits recorded");
    for (h, sharing) in &households {
        let expected: Vec<&String> = recorded[h].iter().collect();
        let reference = coord.replica.household_json(h).unwrap();
        for (i, m) in members.iter().enumerate() {
            if !sharing.contains(m) {
                continue;
            }
            let mut on_phone = phones[i].visit_ids(h);
            on_phone.sort();
            assert_eq!(on_phone.iter().collect::<Vec<_>>(), expected, "{m} holds exactly the visits of {h}");
            assert_eq!(phones[i].replica.household_json(h).unwrap(), reference, "{m} converged on {h}");
        }
    }
    assert_eq!(coord.household_ids().len(), 43, "the coordinator holds every household of b1");
    let server_issues: BTreeSet<String> = ids(&admin.get_ok("/v1/issues")).into_iter().collect();
    assert_eq!(server_issues, issues.into_iter().collect());
    server.assert_sound();
}
