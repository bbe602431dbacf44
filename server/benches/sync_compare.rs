//! Side by side, one run: Doorstep's sync protocol against Automerge's own per-document
//! sync protocol (`automerge::sync`), on the district workload of issue 3.
//!
//! What runs:
//! - the REAL `doorstep-server` binary, started on a loopback port with a temporary data
//!   directory; every Doorstep figure below is measured over HTTP against it;
//! - the district: 47 branches, 41 communities, 11,180 households (CSV import through the
//!   admin API, in chunks), ~3,727 members with 3 households each, 5 visits and 1 issue
//!   per household (some issues moved along their lifecycle), varied Chinese notes. Visits
//!   and issues are built on the server's documents in memory (authored by each
//!   household's member, one Automerge actor per member) and pushed through `/v1/sync`
//!   with the admin's device token (one change per visit, issue and transition);
//! - coordinator first sync (scope: every branch) with a protocol-level client that posts
//!   `SyncRequest`s and decodes the responses, paging until the server has nothing more;
//!   then a sync with nothing new; then the same first sync into a real `Replica` (SQLite
//!   file) with `doorstep_core::sync`, for the end-to-end time;
//! - a member's daily sync with a real `Replica` and `doorstep_core::sync`;
//! - Automerge: for every household, the server's document (as the coordinator received
//!   it) and an empty coordinator document exchange `generate_sync_message` /
//!   `receive_sync_message` in memory until both are quiet; then again with the sync
//!   states persisted (`State::encode`/`decode`), which is the "nothing new" case; the same
//!   for the member's three households with the member's three new changes. A round trip
//!   is one client message and the server's answer; "pipelined" counts the rounds needed
//!   if every document's messages of a round travelled in one request (the maximum over
//!   documents), "sequential" their sum;
//! - pushes from N concurrent devices (1,000): each a member with its own token, first
//!   synced once (not measured), then all post one sync request carrying 5 changes at the
//!   same moment (tokio + reqwest, connections already open); the server's CPU time (and
//!   its writer thread's) and peak RSS (`VmHWM`, reset just before) are read from /proc;
//! - the baseline: the same records as JSON (`HouseholdDocument::to_json` of every
//!   household, one array), compressed with zstd level 3.
//!
//! Run: `cargo bench -p doorstep-server --bench sync_compare` (release; ~4-7 minutes on a
//! busy 2-core machine). In test mode (`cargo test --all-targets`, `cargo bench -- --test`,
//! or `DOORSTEP_BENCH_QUICK=1`) the workload is tiny (50 households, 15 devices).
//! Settings: `DOORSTEP_BENCH_HOUSEHOLDS`, `DOORSTEP_BENCH_DEVICES` (sizes);
//! `DOORSTEP_BENCH_DIR` (where the server's data directory goes, default the system temp
//! dir); `DOORSTEP_BENCH_REPLICA=0` (skip the replica first sync);
//! `DOORSTEP_BENCH_MAX_SERVER_RSS_MB` (kill the run if the server grows past it, default
//! 10240); `DOORSTEP_BENCH_PROFILE_PAUSE=<s>` (print the server pid and wait before the
//! concurrent pushes, to attach a profiler); `DOORSTEP_BENCH_SERVER` (another server
//! binary to run, e.g. an older build: `scripts/bench-side-by-side.sh` alternates them).
//!
//! Bytes are HTTP payload bytes (request and response bodies), for both protocols;
//! HTTP headers are not counted. See `docs/sync-benchmark.md` for the results.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::sync::{Message, State, SyncDoc};
use automerge::{ActorId, AutoCommit, Change};
use doorstep_core::sync::protocol::{self, Outcome, Position, PushedChange, SyncRequest, SyncResponse, WholeDocuments};
use doorstep_core::*;
use doorstep_tests::district::{self as data, NoteContext, DAY_MS, SCHOOL_YEAR_START_MS};
use rand::prelude::*;
use serde_json::{json, Value};

/// The server binary to run: `DOORSTEP_BENCH_SERVER`, or the one cargo built with the bench.
fn server_bin() -> PathBuf {
    std::env::var_os("DOORSTEP_BENCH_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_doorstep-server")))
}
/// Largest response accepted once decompressed.
const MAX_DECODED: usize = 512 * 1024 * 1024;
/// Households per CSV import request (one transaction each).
const CSV_CHUNK: usize = 1_000;
/// Households whose visits and issues go in one seeding push.
const SEED_CHUNK: usize = 150;
/// "Today" for the edits made during the measured phases (2026-03-16, 10:00 China time).
const TODAY_MS: i64 = 1_773_626_400_000;

// ----- configuration -------------------------------------------------------------------

struct Sizes {
    households: usize,
    branches: usize,
    communities: usize,
    visits: usize,
    push_devices: usize,
    changes_per_push: usize,
}

impl Sizes {
    fn members(&self) -> usize {
        self.households.div_ceil(3)
    }
}

fn quick_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let env_quick = std::env::var("DOORSTEP_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    // Criterion's rule: without `--bench` (cargo test) or with `--test`, only test.
    env_quick || args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().replace('_', "").parse().ok())
}

fn sizes(quick: bool) -> Sizes {
    let mut s = if quick {
        Sizes { households: 50, branches: 5, communities: 4, visits: 5, push_devices: 20, changes_per_push: 5 }
    } else {
        Sizes { households: 11_180, branches: 47, communities: 41, visits: 5, push_devices: 1_000, changes_per_push: 5 }
    };
    if let Some(n) = env_usize("DOORSTEP_BENCH_HOUSEHOLDS") {
        s.households = n.max(9);
    }
    if let Some(n) = env_usize("DOORSTEP_BENCH_DEVICES") {
        s.push_devices = n.max(1);
    }
    // The member before last (the last may hold fewer than 3 households) is kept out of
    // the push phase for the daily sync.
    s.push_devices = s.push_devices.min(s.members() - 2);
    s
}

// ----- deterministic data --------------------------------------------------------------

/// The organisation: branch ids and names (the party branch of a school), community ids
/// and names, and each branch's school.
struct District {
    branches: Vec<(String, String, String)>,
    communities: Vec<(String, String)>,
}

fn district(sizes: &Sizes) -> District {
    let branches = (0..sizes.branches)
        .map(|i| {
            let school = format!("{}{}", data::PLACES[i % data::PLACES.len()], data::SCHOOL_KINDS[(i / data::PLACES.len()) % data::SCHOOL_KINDS.len()]);
            (format!("b{:02}", i + 1), format!("{school}党支部"), school)
        })
        .collect();
    let communities = (0..sizes.communities)
        .map(|i| {
            let name = format!(
                "{}{}",
                data::PLACES[(i * 7) % data::PLACES.len()],
                data::COMMUNITY_KINDS[(i / data::PLACES.len()) % data::COMMUNITY_KINDS.len()]
            );
            (format!("c{:02}", i + 1), name)
        })
        .collect();
    District { branches, communities }
}

fn member_id(m: usize) -> String {
    format!("m{m:04}")
}

/// Household `i` belongs to member `i / 3`, in that member's branch.
fn branch_of_member(m: usize, sizes: &Sizes) -> usize {
    m % sizes.branches
}

/// The CSV of households `range` (header included), as coordinators' spreadsheets look.
fn households_csv(range: std::ops::Range<usize>, sizes: &Sizes, district: &District) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(doorstep_server::admin::CSV_COLUMNS.split(',')).unwrap();
    for i in range {
        let rng = &mut StdRng::seed_from_u64(0xD00F ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let m = i / 3;
        let (branch_id, _, school) = &district.branches[branch_of_member(m, sizes)];
        let (community_id, _) = district.communities.choose(rng).unwrap();
        let family = *data::FAMILY_NAMES.choose(rng).unwrap();
        let address = data::address(rng);
        let guardian = format!("{}{}", data::FAMILY_NAMES.choose(rng).unwrap(), data::GIVEN_ADULT.choose(rng).unwrap());
        let relation = *["母亲", "父亲", "祖母", "外婆"].choose(rng).unwrap();
        let phone = format!("13{}{:08}", 5 + rng.random_range(0..5), rng.random_range(0..100_000_000));
        let child = format!("{family}{}", data::GIVEN_CHILD.choose(rng).unwrap());
        let grade = *data::GRADES.choose(rng).unwrap();
        let hukou = *["local", "non_local", "non_local", "policy_care"].choose(rng).unwrap();
        w.write_record([
            family,
            &address,
            community_id,
            branch_id,
            &guardian,
            relation,
            &phone,
            &child,
            school,
            grade,
            hukou,
            &member_id(m),
        ])
        .unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

fn note_context(doc: &HouseholdDocument) -> NoteContext {
    NoteContext::of(&doc.household().expect("household reads"))
}

/// A member's phone actor (one per member, as one phone per member): 16 bytes as random
/// as a phone's (`ActorId::random`), but the same in every run.
fn member_actor(m: usize) -> ActorId {
    let rng = &mut StdRng::seed_from_u64(0xAC70 ^ (m as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    ActorId::from(bytes)
}

/// A member's phone's device id, as enrolment gives it (a UUIDv7: the enrolment's time,
/// then random bytes), the same in every run.
fn member_device(m: usize) -> String {
    let rng = &mut StdRng::seed_from_u64(0xDE71 ^ (m as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut random = [0u8; 10];
    rng.fill_bytes(&mut random);
    let enrolled = SCHOOL_YEAR_START_MS as u64 - 14 * DAY_MS as u64 + rng.random_range(0..7 * DAY_MS as u64);
    uuid::Builder::from_unix_timestamp_millis(enrolled, &random).into_uuid().to_string()
}

/// Visits and an issue on a household the server created: the changes, oldest first.
fn seed_household(index: usize, id: &str, saved: &[u8], sizes: &Sizes) -> Vec<PushedChange> {
    let m = index / 3;
    let member = member_id(m);
    let author = Author { member_id: member.clone(), device_id: member_device(m) };
    let rng = &mut StdRng::seed_from_u64(0x5EED ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9));
    let mut doc = HouseholdDocument::load(id, saved, &member_actor(m)).expect("server document loads");
    let ctx = note_context(&doc);
    let before = doc.heads();
    let mut visit_ids = Vec::new();
    for v in 0..sizes.visits {
        let day = (v as i64 * 190 / sizes.visits.max(1) as i64) + rng.random_range(0..15) as i64;
        let started = SCHOOL_YEAR_START_MS + day * DAY_MS + (2 + rng.random_range(0..10) as i64) * 3_600_000;
        let visit = data::new_visit(rng, id, started, &ctx);
        let at = visit.ended_at_ms.unwrap_or(started) + 600_000;
        visit_ids.push(doc.record_visit(&author, at, &visit).expect("record visit"));
    }
    let issue = data::new_issue(rng, id, visit_ids.first().cloned(), &member);
    let at = SCHOOL_YEAR_START_MS + (60 + rng.random_range(0..120) as i64) * DAY_MS;
    let issue_id = doc.raise_issue(&author, at, &issue).expect("raise issue");
    for (k, to) in data::issue_path(rng).iter().enumerate() {
        doc.transition_issue(&author, at + (k as i64 + 1) * DAY_MS, &issue_id, to, "已与家长沟通，跟进中")
            .expect("transition issue");
    }
    doc.changes_since(&before)
        .into_iter()
        .map(|c| PushedChange { household_id: id.to_string(), bytes: c.raw_bytes().to_vec() })
        .collect()
}

// ----- the server process ----------------------------------------------------------------

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let mut child = Command::new(server_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the server binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines.next().expect("the server prints where it listens").expect("utf-8");
            if let Some(url) = line.strip_prefix("doorstep-server listening on ") {
                break url.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, url }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `VmXXX:` line of /proc/<pid>/status, in KiB.
    fn status_kb(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// CPU time (user + system) of the whole server, and of its writer thread.
    fn cpu(&self) -> (Duration, Duration) {
        let pid = self.pid();
        let writer = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "doorstep-writer"))
            .and_then(|t| cpu_of(&t.path().join("stat")));
        (cpu_of(Path::new(&format!("/proc/{pid}/stat"))).unwrap_or_default(), writer.unwrap_or_default())
    }

    /// Reset the peak RSS (VmHWM) to the current RSS (Linux `clear_refs`, value 5).
    fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU time from a `/proc/.../stat` file.
fn cpu_of(stat: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(stat).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / clock_ticks()))
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

fn create_admin(data_dir: &Path) -> String {
    let out = Command::new(server_bin())
        .args(["admin", "--data-dir"])
        .arg(data_dir)
        .args(["create-admin", "admin", "管理员"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("the admin command runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["token"].as_str().unwrap().to_string()
}

// ----- HTTP ---------------------------------------------------------------------------------

fn blocking_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(900)).build().unwrap()
}

struct Api {
    http: reqwest::blocking::Client,
    url: String,
    token: String,
}

impl Api {
    fn post(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}{path}", self.url)).bearer_auth(&self.token).json(&body).send().expect("request");
        let status = r.status();
        let text = r.text().unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    fn import_csv(&self, csv: String) -> Vec<String> {
        let r = self
            .http
            .post(format!("{}/v1/admin/households/import", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .expect("request");
        let status = r.status();
        let text = r.text().unwrap_or_default();
        assert!(status.is_success(), "import: {status} {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect()
    }

    /// Register a device for a member and exchange its code: (device id, token).
    fn device(&self, member: &str) -> (String, String) {
        let e = self.post("/v1/admin/devices", json!({"member_id": member, "label": "bench phone"}));
        let code = e["enrolment_code"].as_str().unwrap();
        let r = self.http.post(format!("{}/v1/enrol", self.url)).json(&json!({"code": code})).send().unwrap();
        assert!(r.status().is_success());
        let t: Value = r.json().unwrap();
        (t["device_id"].as_str().unwrap().to_string(), t["token"].as_str().unwrap().to_string())
    }
}

/// One sync round trip: the response and the bytes sent and received.
fn post_sync(http: &reqwest::blocking::Client, url: &str, token: &str, req: &SyncRequest) -> (SyncResponse, usize, usize) {
    let body = protocol::encode(req);
    let sent = body.len();
    let r = http
        .post(format!("{url}/v1/sync"))
        .bearer_auth(token)
        .header("content-type", protocol::CONTENT_TYPE)
        .body(body)
        .send()
        .expect("sync request");
    let status = r.status();
    let bytes = r.bytes().expect("sync response");
    assert!(status.is_success(), "sync: {status} {}", String::from_utf8_lossy(&bytes));
    (SyncResponse::decode(&bytes, MAX_DECODED).expect("response decodes"), sent, bytes.len())
}

/// A protocol-level client's pull: page until the server has nothing more.
#[derive(Default)]
struct Pull {
    whole: Vec<(String, Vec<u8>)>,
    changes: usize,
    position: Option<Position>,
    sent: usize,
    received: usize,
    round_trips: usize,
    elapsed: Duration,
}

fn pull_all(http: &reqwest::blocking::Client, url: &str, token: &str, position: Option<Position>) -> Pull {
    let mut pull = Pull { position, ..Default::default() };
    let mut pages: Vec<WholeDocuments> = Vec::new();
    let started = Instant::now();
    loop {
        let (response, sent, received) = post_sync(http, url, token, &SyncRequest::new(pull.position.clone(), vec![]));
        pull.sent += sent;
        pull.received += received;
        pull.round_trips += 1;
        assert!(!response.reconcile_needed, "the server asked for a reconciliation");
        pull.changes += response.data.iter().map(|data| data.chunks.len()).sum::<usize>();
        pages.extend(response.whole);
        pull.position = Some(response.position);
        if !response.more {
            break;
        }
    }
    pull.elapsed = started.elapsed();
    // The documents came without their heads: loaded as a phone loads them (on every core,
    // their heads checked against each page's digest), saved whole.
    let actor = ActorId::random();
    for page in &pages {
        let loaded = page.load(&actor).expect("the documents load");
        pull.whole.extend(loaded.into_iter().map(|(doc, saved)| (doc.id().to_string(), saved)));
    }
    pull
}

// ----- Automerge's per-document protocol ----------------------------------------------------

#[derive(Default)]
struct AmStats {
    docs: usize,
    up: usize,
    down: usize,
    messages: usize,
    max_rounds: usize,
    sum_rounds: usize,
    /// Messages of each round, concatenated per direction (as if pipelined in one request).
    rounds_up: Vec<Vec<u8>>,
    rounds_down: Vec<Vec<u8>>,
    cpu: Duration,
}

impl AmStats {
    fn bytes(&self) -> usize {
        self.up + self.down
    }

    /// Every round's messages batched into one body per direction, zstd level 3.
    fn compressed(&self) -> usize {
        self.rounds_up.iter().chain(&self.rounds_down).map(|b| if b.is_empty() { 0 } else { zstd_len(b) }).sum()
    }
}

/// Sync `client` with `server` the way a phone would over HTTP: the client sends its
/// message (if any), the server answers (if anything); until both are quiet.
fn am_sync(server: &mut AutoCommit, ss: &mut State, client: &mut AutoCommit, cs: &mut State, stats: &mut AmStats) {
    let started = Instant::now();
    let mut round = 0;
    loop {
        let up = client.sync().generate_sync_message(cs).map(Message::encode);
        if let Some(bytes) = &up {
            stats.up += bytes.len();
            stats.messages += 1;
            if stats.rounds_up.len() <= round {
                stats.rounds_up.resize(round + 1, Vec::new());
            }
            stats.rounds_up[round].extend_from_slice(bytes);
            server.sync().receive_sync_message(ss, Message::decode(bytes).unwrap()).expect("server receives");
        }
        let down = server.sync().generate_sync_message(ss).map(Message::encode);
        if let Some(bytes) = &down {
            stats.down += bytes.len();
            stats.messages += 1;
            if stats.rounds_down.len() <= round {
                stats.rounds_down.resize(round + 1, Vec::new());
            }
            stats.rounds_down[round].extend_from_slice(bytes);
            client.sync().receive_sync_message(cs, Message::decode(bytes).unwrap()).expect("client receives");
        }
        if up.is_none() && down.is_none() {
            break;
        }
        round += 1;
        assert!(round < 100, "automerge sync does not settle");
    }
    stats.cpu += started.elapsed();
    stats.docs += 1;
    stats.max_rounds = stats.max_rounds.max(round);
    stats.sum_rounds += round;
}

fn persisted(state: &State) -> State {
    State::decode(&state.encode()).expect("sync state decodes")
}

fn zstd_len(bytes: &[u8]) -> usize {
    zstd_len_at(bytes, 3)
}

fn zstd_len_at(bytes: &[u8], level: i32) -> usize {
    zstd::bulk::compress(bytes, level).expect("zstd").len()
}

// ----- formatting -----------------------------------------------------------------------------

fn kb(bytes: usize) -> String {
    if bytes >= 10 * 1024 * 1024 {
        format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
    } else if bytes >= 10 * 1024 {
        format!("{:.0} KB", bytes as f64 / 1024.0)
    } else if bytes >= 1024 {
        format!("{:.2} KB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

fn secs(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

fn phase(server: &Server, name: &str, started: Instant) {
    let mb = |k: Option<u64>| k.map(|k| format!("{:.0} MB", k as f64 / 1024.0)).unwrap_or_default();
    eprintln!(
        "[sync_compare] {name}: {} (load {}; server RSS {}, peak {})",
        secs(started.elapsed()),
        load_average(),
        mb(server.status_kb("VmRSS:")),
        mb(server.status_kb("VmHWM:"))
    );
}

// ----- the run ----------------------------------------------------------------------------------

fn main() {
    let quick = quick_mode();
    let sizes = sizes(quick);
    let run_started = Instant::now();
    let load_at_start = load_average();
    eprintln!(
        "[sync_compare] {} households, {} members, {} push devices{} (load {load_at_start})",
        sizes.households,
        sizes.members(),
        sizes.push_devices,
        if quick { ", test mode" } else { "" }
    );
    let base = std::env::var_os("DOORSTEP_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new().prefix("doorstep-sync-bench").tempdir_in(base).expect("temp dir");
    let data = dir.path().join("server");
    let admin_token = create_admin(&data);
    let server = Server::start(&data);
    watchdog(server.pid(), env_usize("DOORSTEP_BENCH_MAX_SERVER_RSS_MB").unwrap_or(10 * 1024) as u64);
    let url = server.url.clone();
    let api = Api { http: blocking_client(), url: url.clone(), token: admin_token.clone() };
    let district = district(&sizes);

    // ----- the organisation -------------------------------------------------------------
    let t = Instant::now();
    for (id, name, _) in &district.branches {
        api.post("/v1/admin/branches", json!({"id": id, "name": name}));
    }
    for (id, name) in &district.communities {
        api.post("/v1/admin/communities", json!({"id": id, "name": name}));
    }
    let members = sizes.members();
    parallel(members, 4, |m| {
        let rng = &mut StdRng::seed_from_u64(0xAB ^ m as u64);
        let branch = &district.branches[branch_of_member(m, &sizes)].0;
        api.post(
            "/v1/admin/members",
            json!({"id": member_id(m), "name": data::person(rng), "role": "member", "branch_id": branch}),
        );
    });
    phase(&server, "branches, communities and members (admin API)", t);

    // ----- households: CSV import in chunks -----------------------------------------------
    let t = Instant::now();
    let mut household_ids: Vec<String> = Vec::with_capacity(sizes.households);
    for start in (0..sizes.households).step_by(CSV_CHUNK) {
        let end = (start + CSV_CHUNK).min(sizes.households);
        let ids = api.import_csv(households_csv(start..end, &sizes, &district));
        assert_eq!(ids.len(), end - start);
        household_ids.extend(ids);
    }
    phase(&server, "households (CSV import)", t);

    // ----- visits and issues: built on the server's documents, pushed -----------------------
    let t = Instant::now();
    let http = blocking_client();
    let admin_pull = pull_all(&http, &url, &admin_token, None);
    assert_eq!(admin_pull.whole.len(), sizes.households);
    let created: HashMap<String, Vec<u8>> = admin_pull.whole.into_iter().collect();
    let admin_position = admin_pull.position.clone();
    let chunks: Vec<std::ops::Range<usize>> =
        (0..sizes.households).step_by(SEED_CHUNK).map(|s| s..(s + SEED_CHUNK).min(sizes.households)).collect();
    let (tx, rx) = mpsc::sync_channel::<Vec<PushedChange>>(4);
    let rx = Mutex::new(rx);
    let next_chunk = Mutex::new(0usize);
    let pushed_total = Mutex::new(0usize);
    std::thread::scope(|s| {
        // One builder: the server's writer thread needs the other core.
        for _ in 0..1 {
            let tx = tx.clone();
            let (chunks, next_chunk, created, household_ids, sizes) = (&chunks, &next_chunk, &created, &household_ids, &sizes);
            s.spawn(move || loop {
                let k = {
                    let mut n = next_chunk.lock().unwrap();
                    let k = *n;
                    *n += 1;
                    k
                };
                let Some(range) = chunks.get(k) else { break };
                let mut changes = Vec::new();
                for i in range.clone() {
                    let id = &household_ids[i];
                    changes.extend(seed_household(i, id, &created[id], sizes));
                }
                if tx.send(changes).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for _ in 0..2 {
            let (rx, http, url, token, position, pushed_total) = (&rx, &http, &url, &admin_token, &admin_position, &pushed_total);
            s.spawn(move || loop {
                let batch = match rx.lock().unwrap().recv() {
                    Ok(b) => b,
                    Err(_) => break,
                };
                let n = batch.len();
                let (response, _, _) = post_sync(http, url, token, &SyncRequest::new(position.clone(), batch));
                for ack in &response.acks {
                    if ack.outcome != Outcome::Accepted {
                        panic!("a seeding change was not accepted: {:?}", ack.outcome);
                    }
                }
                assert_eq!(response.acks.len(), n);
                *pushed_total.lock().unwrap() += n;
            });
        }
    });
    drop(created);
    let seeded_changes = pushed_total.into_inner().unwrap();
    phase(&server, &format!("visits and issues ({seeded_changes} changes pushed by the admin device)"), t);

    // The households the seeding grew, compacted once the writer is idle: the coordinator
    // syncs from a quiet server, as after an import.
    let metrics = blocking_client();
    let compactions_due = || -> Option<u64> {
        let text = metrics.get(format!("{url}/metrics")).send().ok()?.text().ok()?;
        text.lines().find_map(|l| l.strip_prefix("doorstep_compactions_due ")).and_then(|v| v.trim().parse().ok())
    };
    // Until none waits (or the server does not say: an older build), at most 2 minutes
    // after `since`.
    let wait_for_compactions = |since: Instant, poll: Duration| {
        while compactions_due().is_some_and(|n| n > 0) && since.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(poll);
        }
    };
    let t = Instant::now();
    wait_for_compactions(t, Duration::from_millis(20));
    phase(&server, "compactions after the seeding", t);

    // ----- coordinator: first sync, then nothing new ---------------------------------------
    let branch_ids: Vec<&String> = district.branches.iter().map(|b| &b.0).collect();
    api.post(
        "/v1/admin/members",
        json!({"id": "coord", "name": "街道统筹 周建国", "role": "coordinator", "scope_branches": branch_ids}),
    );
    let (_, coord_token) = api.device("coord");
    let t = Instant::now();
    let (server_cpu_before_first, writer_cpu_before_first) = server.cpu();
    let first = pull_all(&http, &url, &coord_token, None);
    let (server_cpu_first, writer_cpu_first) = server.cpu();
    let (server_cpu_first, writer_cpu_first) =
        (server_cpu_first.saturating_sub(server_cpu_before_first), writer_cpu_first.saturating_sub(writer_cpu_before_first));
    phase(&server, "coordinator first sync", t);
    assert_eq!(first.whole.len(), sizes.households, "the coordinator receives every household");
    let again = pull_all(&http, &url, &coord_token, first.position.clone());
    assert!(again.whole.is_empty() && again.changes == 0, "nothing new means nothing sent");
    let rss_after_coordinator = server.status_kb("VmHWM:");
    let docs: Vec<(String, Vec<u8>)> = first.whole;

    // The same first sync into a real replica (SQLite file, projection tables), as the
    // coordinator's app would do it: `doorstep_core::sync`.
    let replica_first = if std::env::var("DOORSTEP_BENCH_REPLICA").is_ok_and(|v| v == "0") {
        None
    } else {
        let t = Instant::now();
        let (coord_device, coord_token2) = api.device("coord");
        let replica = Replica::open(dir.path().join("coordinator.sqlite3"), "coord", &coord_device).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let started = Instant::now();
        let report = rt.block_on(doorstep_core::sync(&replica, &url, &coord_token2, &SyncOptions::default())).expect("replica sync");
        let elapsed = started.elapsed();
        assert_eq!(replica.list_households().unwrap().len(), sizes.households);
        phase(&server, "coordinator first sync into a replica", t);
        Some((report, elapsed))
    };

    // ----- the baselines: JSON + zstd, and what an uncompressed save would give ------------
    let t = Instant::now();
    let actor = ActorId::random();
    let mut json_bytes = Vec::with_capacity(docs.len() * 8 * 1024);
    json_bytes.push(b'[');
    let saved_total: usize = docs.iter().map(|(_, b)| b.len()).sum();
    let per_doc: Vec<Mutex<(Vec<u8>, Vec<u8>)>> = (0..docs.len()).map(|_| Mutex::new(Default::default())).collect();
    parallel(docs.len(), 2, |i| {
        let (id, bytes) = &docs[i];
        let doc = HouseholdDocument::load(id, bytes, &actor).expect("document loads");
        let json = serde_json::to_vec(&doc.to_json()).unwrap();
        let raw = AutoCommit::load(bytes).expect("document loads").save_nocompress();
        *per_doc[i].lock().unwrap() = (json, raw);
    });
    let mut nocompress_pages = Vec::new();
    let mut page = Vec::new();
    for (i, cell) in per_doc.into_iter().enumerate() {
        let (json, raw) = cell.into_inner().unwrap();
        if i > 0 {
            json_bytes.push(b',');
        }
        json_bytes.extend_from_slice(&json);
        if !page.is_empty() && page.len() + raw.len() > protocol::DEFAULT_PAGE_BYTES as usize {
            nocompress_pages.push(std::mem::take(&mut page));
        }
        page.extend_from_slice(&raw);
    }
    json_bytes.push(b']');
    nocompress_pages.push(page);
    let json_zstd = zstd_len(&json_bytes);
    // The same JSON at the level the server compresses its answers with.
    let json_zstd_same = zstd_len_at(&json_bytes, protocol::RESPONSE_ZSTD_LEVEL);
    let nocompress_zstd: usize = nocompress_pages.iter().map(|p| zstd_len(p)).sum();
    drop(nocompress_pages);
    phase(&server, "JSON baseline", t);

    // ----- Automerge: first sync and nothing new, per household --------------------------
    let t = Instant::now();
    let mut am_first = AmStats::default();
    let mut am_nothing = AmStats::default();
    let mut automerge_docs: HashMap<String, Vec<u8>> = HashMap::new();
    for (id, bytes) in &docs {
        let mut server_doc = AutoCommit::load(bytes).expect("document loads");
        let mut coord_doc = AutoCommit::new();
        let (mut ss, mut cs) = (State::new(), State::new());
        am_sync(&mut server_doc, &mut ss, &mut coord_doc, &mut cs, &mut am_first);
        let (mut ss, mut cs) = (persisted(&ss), persisted(&cs));
        am_sync(&mut server_doc, &mut ss, &mut coord_doc, &mut cs, &mut am_nothing);
        assert_eq!(server_doc.get_heads(), coord_doc.get_heads());
        automerge_docs.insert(id.clone(), bytes.clone());
    }
    phase(&server, "Automerge per-document sync (in memory)", t);

    // ----- a member's daily sync: a real replica -----------------------------------------------
    let t = Instant::now();
    let daily_member = sizes.members() - 2;
    let daily_member_id = member_id(daily_member);
    let (daily_device, daily_token) = api.device(&daily_member_id);
    let replica = Replica::open(dir.path().join("member.sqlite3"), &daily_member_id, &daily_device).unwrap();
    let rt1 = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let options = SyncOptions::default();
    rt1.block_on(doorstep_core::sync(&replica, &url, &daily_token, &options)).expect("member's first sync");
    let households = replica.list_households().unwrap();
    assert_eq!(households.len(), 3, "a member holds 3 households");
    let heads_before = replica.heads().unwrap();
    let rng = &mut StdRng::seed_from_u64(0xDA11);
    for h in &households[..2] {
        let doc = HouseholdDocument::load(&h.id, &automerge_docs[&h.id], &actor).unwrap();
        let ctx = note_context(&doc);
        replica.record_visit(&data::new_visit(rng, &h.id, TODAY_MS, &ctx)).unwrap();
    }
    let issue = replica.issues(&households[2].id).unwrap().into_iter().next().expect("an issue");
    replica
        .update_issue(
            &issue.id,
            &IssueUpdate {
                urgency: Some(Urgency::High),
                description: Some(format!("{}补充：家长今天再次来电，希望尽快答复。", issue.description)),
                ..Default::default()
            },
        )
        .unwrap();
    let new_changes = replica.export_changes(&heads_before).unwrap();
    let daily_started = Instant::now();
    let daily = rt1.block_on(doorstep_core::sync(&replica, &url, &daily_token, &options)).expect("member's daily sync");
    let daily_elapsed = daily_started.elapsed();
    assert_eq!(daily.accepted, 3, "two visits and one issue update accepted");
    // Automerge: the phone's 3 documents, in sync before, with persisted sync states.
    let mut am_daily = AmStats::default();
    for h in &households {
        let mut server_doc = AutoCommit::load(&automerge_docs[&h.id]).unwrap();
        let mut phone_doc = AutoCommit::load(&automerge_docs[&h.id]).unwrap();
        let (mut ss, mut cs) = (State::new(), State::new());
        am_sync(&mut server_doc, &mut ss, &mut phone_doc, &mut cs, &mut AmStats::default());
        let (mut ss, mut cs) = (persisted(&ss), persisted(&cs));
        let changes: Vec<Change> = new_changes
            .iter()
            .filter(|c| c.household_id == h.id)
            .flat_map(|c| c.changes.iter().map(|b| Change::from_bytes(b.clone()).unwrap()))
            .collect();
        phone_doc.apply_changes(changes).unwrap();
        am_sync(&mut server_doc, &mut ss, &mut phone_doc, &mut cs, &mut am_daily);
        assert_eq!(server_doc.get_heads(), phone_doc.get_heads());
    }
    phase(&server, "member's daily sync", t);
    drop(automerge_docs);

    // ----- pushes from many devices at once ------------------------------------------------
    let t = Instant::now();
    let n = sizes.push_devices;
    let tokens: Vec<Mutex<Option<(String, String)>>> = (0..n).map(|_| Mutex::new(None)).collect();
    parallel(n, 4, |m| {
        *tokens[m].lock().unwrap() = Some(api.device(&member_id(m)));
    });
    let devices: Vec<(String, String)> = tokens.into_iter().map(|t| t.into_inner().unwrap().unwrap()).collect();
    phase(&server, &format!("{n} devices enrolled"), t);
    let t = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(3600))
        .timeout(Duration::from_secs(900))
        .build()
        .unwrap();
    let first_bodies: Vec<Vec<u8>> = (0..n).map(|_| protocol::encode(&SyncRequest::new(None, vec![]))).collect();
    let warm = run_concurrently(&rt, &client, &url, &devices, first_bodies);
    let warm: Vec<SyncResponse> = warm.into_iter().map(|w| w.response).collect();
    phase(&server, &format!("{n} devices' first syncs (not measured)"), t);
    // Each device: 5 changes on its households (visits and an issue update), from a new actor.
    let t = Instant::now();
    let bodies: Vec<Mutex<Vec<u8>>> = (0..n).map(|_| Mutex::new(Vec::new())).collect();
    parallel(n, 2, |m| {
        let response = &warm[m];
        let author = Author { member_id: member_id(m), device_id: devices[m].0.clone() };
        let actor = ActorId::random();
        let rng = &mut StdRng::seed_from_u64(0xB0057 ^ m as u64);
        let loaded = response.whole.as_ref().map(|whole| whole.load(&actor).unwrap()).unwrap_or_default();
        let mut docs: Vec<HouseholdDocument> = loaded.into_iter().map(|(doc, _)| doc).collect();
        assert!(!docs.is_empty(), "device {m} holds households");
        let heads: Vec<_> = docs.iter_mut().map(|d| d.heads()).collect();
        for k in 0..sizes.changes_per_push {
            let j = k % docs.len();
            let doc = &mut docs[j];
            let at = TODAY_MS + k as i64 * 60_000;
            if k == sizes.changes_per_push - 1 {
                let issue = doc.issues().unwrap().into_iter().next().expect("an issue");
                let update = IssueUpdate { urgency: Some(Urgency::High), ..Default::default() };
                let update = if issue.urgency == Urgency::High {
                    IssueUpdate { urgency: Some(Urgency::Normal), ..update }
                } else {
                    update
                };
                doc.update_issue(&author, at, &issue.id, &update).unwrap();
            } else {
                let ctx = note_context(doc);
                let id = doc.id().to_string();
                doc.record_visit(&author, at, &data::new_visit(rng, &id, at - 3_600_000, &ctx)).unwrap();
            }
        }
        let mut changes = Vec::new();
        for (doc, before) in docs.iter_mut().zip(&heads) {
            let id = doc.id().to_string();
            for c in doc.changes_since(before) {
                changes.push(PushedChange { household_id: id.clone(), bytes: c.raw_bytes().to_vec() });
            }
        }
        assert_eq!(changes.len(), sizes.changes_per_push);
        *bodies[m].lock().unwrap() = protocol::encode(&SyncRequest::new(Some(response.position.clone()), changes));
    });
    let bodies: Vec<Vec<u8>> = bodies.into_iter().map(|b| b.into_inner().unwrap()).collect();
    drop(warm);
    phase(&server, "pushes built", t);
    if let Some(pause) = env_usize("DOORSTEP_BENCH_PROFILE_PAUSE") {
        // Time to attach a profiler to the server before the burst.
        eprintln!("[sync_compare] server pid {}; pausing {pause} s before the pushes", server.pid());
        std::thread::sleep(Duration::from_secs(pause as u64));
    }
    let peak_before_pushes = server.status_kb("VmHWM:");
    let rss_before_pushes = server.status_kb("VmRSS:");
    let reset = server.reset_peak();
    let burst_load = load_average();
    let (server_cpu_before, writer_cpu_before) = server.cpu();
    let own_cpu_before = cpu_of(Path::new("/proc/self/stat")).unwrap_or_default();
    let burst = run_concurrently(&rt, &client, &url, &devices, bodies);
    let (server_cpu_after, writer_cpu_after) = server.cpu();
    let own_cpu = cpu_of(Path::new("/proc/self/stat")).unwrap_or_default().saturating_sub(own_cpu_before);
    let server_cpu = server_cpu_after.saturating_sub(server_cpu_before);
    let writer_cpu = writer_cpu_after.saturating_sub(writer_cpu_before);
    let push_peak = server.status_kb("VmHWM:");
    let first_start = burst.iter().map(|b| b.started).min().unwrap();
    let last_end = burst.iter().map(|b| b.ended).max().unwrap();
    let wall = last_end - first_start;
    let accepted: usize =
        burst.iter().map(|b| b.response.acks.iter().filter(|a| a.outcome == Outcome::Accepted).count()).sum();
    let pushed: usize = n * sizes.changes_per_push;
    let mut latencies: Vec<Duration> = burst.iter().map(|b| b.ended - b.started).collect();
    latencies.sort();
    let rate = accepted as f64 / wall.as_secs_f64();
    phase(&server, "concurrent pushes", t);
    drop(rt);
    // The households the burst grew are compacted once the writer is idle, after the
    // burst: how many, how long it takes, and its CPU (not counted in the burst's).
    let t = Instant::now();
    // `None` from a server older than the gauge (side by side with older builds).
    let due_after_burst = compactions_due();
    wait_for_compactions(t, Duration::from_millis(5));
    let compacted_in = t.elapsed();
    let left = compactions_due();
    let (server_cpu_compacted, writer_cpu_compacted) = server.cpu();
    phase(&server, "compactions after the burst", t);

    // ----- the table ---------------------------------------------------------------------------
    let ds_first = first.sent + first.received;
    let ds_nothing = again.sent + again.received;
    let ds_daily = (daily.bytes_sent + daily.bytes_received) as usize;
    let ratio_json = ds_first as f64 / json_zstd as f64;
    let ratio_am = am_first.bytes() as f64 / ds_first as f64;
    let ratio_am_z = am_first.compressed() as f64 / ds_first as f64;
    let mb = |kb: Option<u64>| kb.map(|k| format!("{:.0} MB", k as f64 / 1024.0)).unwrap_or_else(|| "n/a".into());
    let mut out = String::new();
    let mut row = |cells: &[&str]| {
        out.push_str("| ");
        out.push_str(&cells.join(" | "));
        out.push_str(" |\n");
    };
    row(&["Scenario", "Measure", "Doorstep (real server, loopback)", "Automerge per-document sync", "Target", "Result"]);
    row(&["---", "---", "---:", "---:", "---", "---"]);
    row(&[
        "Coordinator first sync",
        "bytes, both ways",
        &format!("{} (↑ {} ↓ {})", kb(ds_first), kb(first.sent), kb(first.received)),
        &format!("{} (↑ {} ↓ {}); {} zstd-batched per round", kb(am_first.bytes()), kb(am_first.up), kb(am_first.down), kb(am_first.compressed())),
        "≤ 1.25× zstd JSON; ≥ 3× fewer than Automerge",
        &format!(
            "{:.2}× zstd-3 JSON: {} ({:.2}× the JSON at the same zstd-{}); Automerge/Doorstep {:.2}× raw, {:.2}× zstd: {}",
            ratio_json,
            yes(ratio_json <= 1.25),
            ds_first as f64 / json_zstd_same as f64,
            protocol::RESPONSE_ZSTD_LEVEL,
            ratio_am,
            ratio_am_z,
            yes(ratio_am >= 3.0)
        ),
    ]);
    row(&[
        "",
        "round trips",
        &first.round_trips.to_string(),
        &format!("{} pipelined (max per doc); {} messages, {} sequential", am_first.max_rounds, am_first.messages, am_first.sum_rounds),
        "",
        "",
    ]);
    row(&[
        "",
        "time",
        &format!(
            "{} wall (server + loopback + decode); server CPU {} (writer thread {})",
            secs(first.elapsed),
            secs(server_cpu_first),
            secs(writer_cpu_first)
        ),
        &format!("{} CPU, in memory, no I/O", secs(am_first.cpu)),
        "",
        "",
    ]);
    if let Some((report, elapsed)) = &replica_first {
        row(&[
            "",
            "time into a real replica",
            &format!(
                "{} wall, {} round trips, {} ({}: `doorstep_core::sync` into a SQLite replica with its projections)",
                secs(*elapsed),
                report.round_trips,
                kb((report.bytes_sent + report.bytes_received) as usize),
                "client applies every page"
            ),
            "",
            "",
            "",
        ]);
    }
    row(&[
        "",
        "zstd-3 JSON of the same records",
        &format!(
            "{} (JSON {}; at zstd-{} {}; Automerge saves {})",
            kb(json_zstd),
            kb(json_bytes.len()),
            protocol::RESPONSE_ZSTD_LEVEL,
            kb(json_zstd_same),
            kb(saved_total)
        ),
        "",
        "baseline",
        "",
    ]);
    row(&[
        "Coordinator, nothing new",
        "bytes, both ways",
        &format!("{} (↑ {} ↓ {})", kb(ds_nothing), kb(again.sent), kb(again.received)),
        &format!("{} (↑ {} ↓ {}); {} zstd-batched", kb(am_nothing.bytes()), kb(am_nothing.up), kb(am_nothing.down), kb(am_nothing.compressed())),
        "≤ 2 KB",
        yes(ds_nothing <= 2048),
    ]);
    row(&[
        "",
        "round trips",
        &again.round_trips.to_string(),
        &format!("{} pipelined; {} messages", am_nothing.max_rounds, am_nothing.messages),
        "1",
        yes(again.round_trips == 1),
    ]);
    row(&[
        "Member daily sync (3 households, 2 visits, 1 issue update)",
        "bytes, both ways",
        &format!("{} (↑ {} ↓ {}), {}", kb(ds_daily), kb(daily.bytes_sent as usize), kb(daily.bytes_received as usize), secs(daily_elapsed)),
        &format!("{} (↑ {} ↓ {})", kb(am_daily.bytes()), kb(am_daily.up), kb(am_daily.down)),
        "≤ 2 KB",
        yes(ds_daily <= 2048),
    ]);
    row(&[
        "",
        "round trips",
        &daily.round_trips.to_string(),
        &format!("{} pipelined; {} messages", am_daily.max_rounds, am_daily.messages),
        "1",
        yes(daily.round_trips == 1),
    ]);
    row(&[
        &format!("Pushes from {n} concurrent devices ({} changes each)", sizes.changes_per_push),
        "accepted changes / s",
        &format!("{rate:.0}/s ({accepted} of {pushed} accepted in {})", secs(wall)),
        "n/a (no server)",
        "≥ 5,000/s",
        yes(rate >= 5000.0),
    ]);
    row(&[
        "",
        "latency per request",
        &format!("p50 {}, p99 {}, max {}", secs(percentile(&latencies, 0.5)), secs(percentile(&latencies, 0.99)), secs(*latencies.last().unwrap())),
        "",
        "",
        "",
    ]);
    row(&[
        "",
        "CPU used during the pushes",
        &format!(
            "server {} (writer thread {} → {:.0} changes per writer-CPU-second), bench client {}",
            secs(server_cpu),
            secs(writer_cpu),
            accepted as f64 / writer_cpu.as_secs_f64().max(0.001),
            secs(own_cpu)
        ),
        "",
        "",
        "",
    ]);
    row(&[
        "",
        "compacting afterwards (writer idle)",
        &match (due_after_burst, left) {
            (Some(due), Some(left)) => format!(
                "{due} households waiting as the burst ended, {left} left {} later; server CPU {} (writer thread {})",
                secs(compacted_in),
                secs(server_cpu_compacted.saturating_sub(server_cpu_after)),
                secs(writer_cpu_compacted.saturating_sub(writer_cpu_after))
            ),
            _ => "n/a: this server build does not report `doorstep_compactions_due`".to_string(),
        },
        "",
        "",
        "",
    ]);
    row(&[
        "",
        "server peak RSS (VmHWM)",
        &format!(
            "{} during the pushes{} (RSS {} before them); {} over the whole run",
            mb(push_peak),
            if reset { "" } else { " (reset failed: whole run)" },
            mb(rss_before_pushes),
            mb(peak_before_pushes.max(push_peak))
        ),
        "",
        "",
        "",
    ]);
    if quick {
        println!("\n(test mode: a tiny workload; the figures and results below are not meaningful)");
    }
    println!("\n{out}");
    println!(
        "Workload: {} branches, {} communities, {} households, {} members, {} visits and 1 issue per household \
         ({} changes seeded); coordinator scope: all branches.",
        sizes.branches,
        sizes.communities,
        sizes.households,
        sizes.members(),
        sizes.visits,
        seeded_changes
    );
    println!(
        "What-if: the same documents saved without Automerge's column compression (`save_nocompress`), whole with \
         their heads and one after another (the server's answers before protocol 3), zstd-3 per 4 MiB page: {} \
         ({:.2}× the zstd-3 JSON).",
        kb(nocompress_zstd),
        nocompress_zstd as f64 / json_zstd as f64
    );
    println!(
        "Server peak RSS after the coordinator's first sync: {}. Load average: {load_at_start} at start, {burst_load} \
         before the pushes, {} at the end. Whole run: {}.",
        mb(rss_after_coordinator),
        load_average(),
        secs(run_started.elapsed())
    );
}

/// Stop the run (and the server) if the server's RSS passes `limit_mb`: other work shares
/// this machine.
fn watchdog(pid: u32, limit_mb: u64) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return };
        let rss_kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if rss_kb / 1024 > limit_mb {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            eprintln!(
                "[sync_compare] ABORTED: the server's RSS reached {} MB (limit {limit_mb} MB, \
                 DOORSTEP_BENCH_MAX_SERVER_RSS_MB); server killed",
                rss_kb / 1024
            );
            std::process::exit(3);
        }
    });
}

/// Run `f(i)` for `i` in `0..n` on `threads` threads.
fn parallel(n: usize, threads: usize, f: impl Fn(usize) + Sync) {
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = {
                    let mut g = next.lock().unwrap();
                    let i = *g;
                    *g += 1;
                    i
                };
                if i >= n {
                    break;
                }
                f(i);
            });
        }
    });
}

struct Timed {
    response: SyncResponse,
    started: Instant,
    ended: Instant,
}

/// Post one body per device, all at once (released together by a barrier).
fn run_concurrently(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    url: &str,
    devices: &[(String, String)],
    bodies: Vec<Vec<u8>>,
) -> Vec<Timed> {
    let n = devices.len();
    rt.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
        let mut set = tokio::task::JoinSet::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let (client, barrier) = (client.clone(), barrier.clone());
            let url = format!("{url}/v1/sync");
            let token = devices[i].1.clone();
            set.spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", protocol::CONTENT_TYPE)
                    .body(body)
                    .send()
                    .await
                    .expect("sync request");
                let status = r.status();
                let bytes = r.bytes().await.expect("sync response");
                let ended = Instant::now();
                assert!(status.is_success(), "sync: {status} {}", String::from_utf8_lossy(&bytes));
                let response = SyncResponse::decode(&bytes, MAX_DECODED).expect("response decodes");
                (i, Timed { response, started, ended })
            });
        }
        barrier.wait().await;
        let mut out: Vec<Option<Timed>> = (0..n).map(|_| None).collect();
        while let Some(done) = set.join_next().await {
            let (i, timed) = done.expect("request task");
            out[i] = Some(timed);
        }
        out.into_iter().map(|t| t.unwrap()).collect()
    })
}
