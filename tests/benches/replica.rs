//! Benchmarks of the replica against the targets in `docs/benchmarks.md`.
//!
//! - `record_visit/durable`: one visit through `Replica::record_visit` on a real file
//!   (WAL, `synchronous = FULL`), into a member's replica of 30 households with 10-20
//!   visits each, which knows the member's role (as after a sync), so the member's rules
//!   check each visit. Besides criterion's estimate, ~2,000 individually timed calls give
//!   p50/p99, alternated with as many into a replica that does not know the role yet (no
//!   check): the check's cost, side by side.
//! - `member/open_and_list_households`: `Replica::open` + `list_households` on a member's
//!   replica (30 households, 10 visits each, some open issues).
//! - `coordinator/open_and_overview`: `Replica::open` + `overview(today)` on a
//!   coordinator's replica (11,180 households, 5 visits and 1 issue each), built once per
//!   run by creating the documents in memory and importing their changes in batches.
//!
//! Run: `cargo bench -p doorstep-tests --bench replica`. A summary table (p50/p99 from
//! individually timed calls) is printed at the end.
//!
//! In test mode (`cargo test --benches`, `cargo test --all-targets`, or
//! `cargo bench -- --test`) every size is small so that it finishes quickly (see
//! `Sizes::from_env`). `DOORSTEP_BENCH_HOUSEHOLDS` sets the coordinator fixture's household
//! count (default 11,180; 200 in test mode, 40 in a debug build) and
//! `DOORSTEP_BENCH_RECORD_CALLS` the number of individually timed `record_visit` calls
//! (default 2,000). `DOORSTEP_BENCH_DIR` sets where the SQLite files go (default: the
//! system temp dir; the figures depend on its file system).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use automerge::ActorId;
use criterion::Criterion;
use doorstep_core::sync::protocol::{Position, SyncResponse};
use doorstep_core::*;
use doorstep_tests::district::{self as data, NoteContext, DAY_MS, SCHOOL_YEAR_START_MS};
use rand::prelude::*;

// ----- configuration -----------------------------------------------------------------

/// How big the fixtures are and how many samples are taken.
struct Sizes {
    member_households: usize,
    member_visits: usize,
    coordinator_households: usize,
    record_calls: usize,
    open_samples: usize,
    overview_samples: usize,
}

impl Sizes {
    /// The measured sizes, or small ones in test mode: 200 coordinator households in an
    /// optimised build (`cargo bench -- --test`), fewer in a debug build (`cargo test
    /// --all-targets`), where Automerge is about ten times slower.
    fn from_env(quick: bool) -> Sizes {
        let debug = cfg!(debug_assertions);
        let mut sizes = match (quick, debug) {
            (false, _) => Sizes {
                member_households: 30,
                member_visits: 10,
                coordinator_households: 11_180,
                record_calls: 2_000,
                open_samples: 300,
                overview_samples: 50,
            },
            (true, false) => Sizes {
                member_households: 30,
                member_visits: 10,
                coordinator_households: 200,
                record_calls: 20,
                open_samples: 3,
                overview_samples: 3,
            },
            (true, true) => Sizes {
                member_households: 10,
                member_visits: 3,
                coordinator_households: 40,
                record_calls: 10,
                open_samples: 2,
                overview_samples: 2,
            },
        };
        if let Some(n) = env_usize("DOORSTEP_BENCH_HOUSEHOLDS") {
            sizes.coordinator_households = n.max(1);
        }
        if let Some(n) = env_usize("DOORSTEP_BENCH_RECORD_CALLS") {
            sizes.record_calls = n.max(1);
        }
        sizes
    }
}
/// After this many recorded visits per household the record fixture is reset, so that
/// households hold 10-20 visits while being measured.
const RECORD_VISITS_BEFORE_RESET: usize = 10;
const IMPORT_BATCH: usize = 1_000;
const TODAY: &str = "2026-03-16";

const MEMBER_ID: &str = "m-李晓云";
const MEMBER_DEVICE: &str = "d-李晓云-phone";
const COORDINATOR_ID: &str = "m-街道统筹-周建国";
const COORDINATOR_DEVICE: &str = "d-街道办-pc";

fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    // Criterion's own rule: without `--bench` (cargo test), or with `--test`, it tests.
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().replace('_', "").parse().ok())
}

// ----- deterministic data (the district: `doorstep_tests::district`) -----------------

/// The fixtures' communities (社区).
const COMMUNITIES: &[&str] = &[
    "c-平西", "c-平东", "c-平南", "c-平北", "c-夏东", "c-夏西", "c-夏南一", "c-夏南二", "c-夏北", "c-叠北",
    "c-叠南", "c-叠东", "c-三山", "c-东约", "c-西约", "c-南约", "c-北约", "c-灯湖", "c-海五", "c-桂园",
    "c-翠湖", "c-文翰", "c-宝翠", "c-华翠", "c-季华", "c-石肯", "c-大沥口", "c-东二", "c-简村", "c-映月",
];
/// Party branches by school: branch id, school name.
const SCHOOLS: &[(&str, &str)] = &[
    ("b-桂城一小", "桂城第一小学"),
    ("b-平洲一小", "平洲第一小学"),
    ("b-夏东小学", "夏东小学"),
    ("b-灯湖小学", "灯湖小学"),
    ("b-文翰中学", "文翰中学"),
    ("b-桂江一中", "桂江第一中学"),
    ("b-映月幼儿园", "映月幼儿园"),
    ("b-叠滘小学", "叠滘小学"),
];

/// One household's profile; its students go to the school of its branch.
fn new_household(rng: &mut StdRng, assigned: &[String]) -> NewHousehold {
    let family = *data::FAMILY_NAMES.choose(rng).unwrap();
    let (branch, school) = *SCHOOLS.choose(rng).unwrap();
    let mother = data::person(rng);
    let father = format!("{family}{}", data::GIVEN_ADULT.choose(rng).unwrap());
    let mut guardians =
        vec![NewGuardian { name: mother, relation: "母亲".into(), phone: format!("139{:08}", rng.random_range(0..100_000_000)) }];
    if rng.random_ratio(60, 100) {
        guardians.push(NewGuardian { name: father, relation: "父亲".into(), phone: format!("138{:08}", rng.random_range(0..100_000_000)) });
    }
    let students = (0..1 + rng.random_range(0..2))
        .map(|_| NewStudent {
            name: format!("{family}{}", data::GIVEN_CHILD.choose(rng).unwrap()),
            school: school.into(),
            grade: (*data::GRADES.choose(rng).unwrap()).into(),
            hukou_status: match rng.random_range(0..10) {
                0..=4 => HukouStatus::NonLocal,
                5..=8 => HukouStatus::Local,
                _ => HukouStatus::PolicyCare,
            },
        })
        .collect();
    NewHousehold {
        family_name: family.into(),
        address: data::address(rng),
        community_id: (*COMMUNITIES.choose(rng).unwrap()).into(),
        branch_id: branch.into(),
        guardians,
        students,
        assigned_members: assigned.to_vec(),
        notes: if rng.random_ratio(50, 100) { "晚上七点后家中有人；祖母只会说粤语。".into() } else { String::new() },
    }
}

/// A visit on day `day` of the school year, some time between 10:00 and 20:00.
fn new_visit(rng: &mut StdRng, household_id: &str, day: i64, ctx: &NoteContext) -> NewVisit {
    let started = SCHOOL_YEAR_START_MS + day * DAY_MS + (10 + rng.random_range(0..10) as i64) * 3_600_000;
    data::new_visit(rng, household_id, started, ctx)
}

/// What one household document of a fixture holds.
#[derive(Clone, Copy)]
struct Shape {
    visits: usize,
    /// Issues of the household at this index.
    issues: fn(usize) -> usize,
}

/// Build `count` household documents in memory (on one actor, on `threads` threads) and
/// return their changes, ready for `Replica::import_changes`.
fn build_changes(count: usize, shape: Shape, members: &[String], seed: u64, threads: usize) -> Vec<HouseholdChanges> {
    let actor = ActorId::random();
    let threads = threads.max(1).min(count.max(1));
    let chunk = count.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let actor = actor.clone();
                s.spawn(move || {
                    let start = t * chunk;
                    let end = ((t + 1) * chunk).min(count);
                    (start..end)
                        .map(|i| build_household(&actor, i, shape, members, seed))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("fixture builder thread")).collect()
    })
}

fn build_household(actor: &ActorId, index: usize, shape: Shape, members: &[String], seed: u64) -> HouseholdChanges {
    let rng = &mut StdRng::seed_from_u64(seed ^ (index as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let member = &members[index % members.len()];
    let author = Author { member_id: member.clone(), device_id: format!("d-{member}") };
    let created = SCHOOL_YEAR_START_MS - 30 * DAY_MS + rng.random_range(0..20) as i64 * DAY_MS;
    let mut doc = HouseholdDocument::create(actor, &author, created, &new_household(rng, std::slice::from_ref(member)))
        .expect("create household");
    let ctx = NoteContext::of(&doc.household().expect("household reads"));
    let id = doc.id().to_string();
    let mut visit_ids = Vec::new();
    for v in 0..shape.visits {
        // Spread over the school year so far (~190 days), in order.
        let day = (v as i64 * 190 / shape.visits.max(1) as i64) + rng.random_range(0..15) as i64;
        let visit = new_visit(rng, &id, day, &ctx);
        let at = visit.ended_at_ms.unwrap_or(visit.started_at_ms);
        visit_ids.push(doc.record_visit(&author, at, &visit).expect("record visit"));
    }
    for n in 0..(shape.issues)(index) {
        let visit = visit_ids.get(n).cloned();
        let issue = data::new_issue(rng, &id, visit, member);
        let at = SCHOOL_YEAR_START_MS + (60 + rng.random_range(0..120) as i64) * DAY_MS;
        let issue_id = doc.raise_issue(&author, at, &issue).expect("raise issue");
        for (k, to) in data::issue_path(rng).iter().enumerate() {
            doc.transition_issue(&author, at + (k as i64 + 1) * DAY_MS, &issue_id, to, "已与家长沟通 / 跟进中")
                .expect("transition issue");
        }
    }
    let changes = doc.changes_since(&[]).into_iter().map(|c| c.raw_bytes().to_vec()).collect();
    HouseholdChanges { household_id: id, changes }
}

/// Import fixture changes into the replica in large batches.
fn import_all(replica: &Replica, changes: &[HouseholdChanges]) {
    for batch in changes.chunks(IMPORT_BATCH) {
        let report = replica.import_changes(batch).expect("import fixture changes");
        assert_eq!(report.changes_waiting, 0, "fixture changes must all apply");
    }
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

// ----- measurements ---------------------------------------------------------------------

struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    assert!(!samples.is_empty());
    samples.sort();
    // Nearest-rank percentiles.
    let rank = |p: f64| samples[((p / 100.0 * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    Stats {
        n: samples.len(),
        p50: rank(50.0),
        p99: rank(99.0),
        max: *samples.last().unwrap(),
        mean: samples.iter().sum::<Duration>() / samples.len() as u32,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

struct Row {
    what: String,
    stats: Stats,
    /// Median on-CPU time of the calls, when the platform tells it.
    cpu_p50: Option<Duration>,
    target: Target,
}

#[derive(Clone, Copy)]
enum Target {
    None,
    /// p50 and p99 bounds.
    Percentiles(Duration, Duration),
    /// A bound on the median.
    Median(Duration),
}

impl Target {
    fn text(self) -> String {
        match self {
            Target::None => "-".into(),
            Target::Percentiles(p50, p99) => format!("p50 <= {} ms, p99 <= {} ms", p50.as_millis(), p99.as_millis()),
            Target::Median(d) => format!("median <= {} ms", d.as_millis()),
        }
    }

    fn met(self, s: &Stats) -> &'static str {
        let ok = match self {
            Target::None => return "-",
            Target::Percentiles(p50, p99) => s.p50 <= p50 && s.p99 <= p99,
            Target::Median(d) => s.p50 <= d,
        };
        if ok {
            "yes"
        } else {
            "**no**"
        }
    }
}

fn row(what: impl Into<String>, samples: &[Sample], target: Target) -> Row {
    let cpu: Option<Vec<Duration>> = samples.iter().map(|s| s.cpu).collect();
    Row {
        what: what.into(),
        stats: stats(samples.iter().map(|s| s.wall).collect()),
        cpu_p50: cpu.map(|c| stats(c).p50),
        target,
    }
}

/// A member's replica (normally 30 households of 10 visits), built once and copied for
/// every use.
struct MemberFixture {
    path: PathBuf,
    /// Each household's id and what its notes refer to.
    households: Vec<(String, NoteContext)>,
}

fn member_fixture(dir: &Path, households: usize, visits: usize) -> MemberFixture {
    let path = dir.join("member-template.sqlite3");
    let members = vec![MEMBER_ID.to_string()];
    // About a third of the households have one or two problems, most still open.
    let shape = Shape { visits, issues: |i| if i % 3 == 0 { 1 + i % 2 } else { 0 } };
    let changes = build_changes(households, shape, &members, 7, 2);
    let replica = Replica::open(&path, MEMBER_ID, MEMBER_DEVICE).expect("open member fixture");
    import_all(&replica, &changes);
    let listed = replica.list_households().unwrap();
    assert_eq!(listed.len(), households);
    let households = listed
        .into_iter()
        .map(|h| {
            let ctx = NoteContext::of(&replica.household(&h.id).expect("household reads"));
            (h.id, ctx)
        })
        .collect();
    drop(replica);
    MemberFixture { path, households }
}

/// Copies the member template and records visits round-robin over its households,
/// resetting to a fresh copy before any household exceeds 20 visits.
struct Recorder {
    template: PathBuf,
    path: PathBuf,
    /// The member's role, as a sync gave it; `None`: not known yet, edits not checked.
    role: Option<Role>,
    households: Vec<(String, NoteContext)>,
    replica: Option<Replica>,
    calls_since_reset: usize,
    rng: StdRng,
    day: i64,
}

impl Recorder {
    fn new(template: &MemberFixture, path: PathBuf, role: Option<Role>) -> Recorder {
        let mut r = Recorder {
            template: template.path.clone(),
            path,
            role,
            households: template.households.clone(),
            replica: None,
            calls_since_reset: 0,
            rng: StdRng::seed_from_u64(99),
            day: 195,
        };
        r.reset();
        r
    }

    fn reset(&mut self) {
        self.replica = None;
        remove_db(&self.path);
        std::fs::copy(&self.template, &self.path).expect("copy member fixture");
        let replica = Replica::open(&self.path, MEMBER_ID, MEMBER_DEVICE).expect("open record fixture");
        if let Some(role) = self.role {
            // As a sync brings it, with nothing else.
            replica.apply_sync_response(SyncResponse::new(vec![], Position::default(), role)).expect("the role is kept");
        }
        // Load every household once, as an app does on its first screen of a household:
        // the timed calls measure the steady state, not the first load.
        for (id, _) in &self.households {
            replica.household(id).expect("load household");
        }
        self.replica = Some(replica);
        self.calls_since_reset = 0;
    }

    /// Record one visit; returns how long `record_visit` took (reset time excluded), and
    /// how that time was spent.
    fn record_one(&mut self) -> Sample {
        if self.calls_since_reset >= self.households.len() * RECORD_VISITS_BEFORE_RESET {
            self.reset();
        }
        let (household, ctx) = &self.households[self.calls_since_reset % self.households.len()];
        self.day += 1;
        let visit = new_visit(&mut self.rng, household, self.day % 300, ctx);
        let replica = self.replica.as_ref().unwrap();
        let sample = measure(|| replica.record_visit(&visit).expect("record visit"));
        self.calls_since_reset += 1;
        sample
    }
}

/// One timed call: wall time, and (on Linux) the thread's CPU time and the time it spent
/// runnable but waiting for a CPU (other processes); the rest is time blocked, mostly fsync.
struct Sample {
    wall: Duration,
    cpu: Option<Duration>,
    runq: Option<Duration>,
}

/// Time `f`, with the calling thread's CPU time and run-queue wait.
fn measure<T>(f: impl FnOnce() -> T) -> Sample {
    let (cpu0, runq0) = (thread_cpu_time(), run_queue_wait());
    let t = Instant::now();
    std::hint::black_box(f());
    let wall = t.elapsed();
    let (cpu1, runq1) = (thread_cpu_time(), run_queue_wait());
    let delta = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
    Sample { wall, cpu: delta(cpu0, cpu1), runq: delta(runq0, runq1) }
}

/// Where the wall time of `record_visit` calls went, as a note for the summary.
fn breakdown(what: &str, samples: &[Sample]) -> Option<String> {
    let cpu: Vec<Duration> = samples.iter().map(|s| s.cpu).collect::<Option<_>>()?;
    let runq: Vec<Duration> = samples.iter().map(|s| s.runq).collect::<Option<_>>()?;
    let blocked: Vec<Duration> = samples
        .iter()
        .zip(cpu.iter().zip(&runq))
        .map(|(s, (c, r))| s.wall.saturating_sub(*c + *r))
        .collect();
    let (cpu, runq, blocked) = (stats(cpu), stats(runq), stats(blocked));
    Some(format!(
        "{what}: on-CPU p50 {} ms / p99 {} ms / mean {} ms; waiting for a CPU (other load) mean {} ms; \
         blocked (fsync, I/O) p50 {} ms / p99 {} ms / mean {} ms",
        ms(cpu.p50),
        ms(cpu.p99),
        ms(cpu.mean),
        ms(runq.mean),
        ms(blocked.p50),
        ms(blocked.p99),
        ms(blocked.mean)
    ))
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_time() -> Option<Duration> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

/// Time the calling thread has spent runnable but not running (Linux schedstat).
fn run_queue_wait() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().nth(1)?.parse().ok().map(Duration::from_nanos)
}

/// Open a replica and run `f` on it (timed); closing it is not timed.
fn time_open<T>(path: &Path, member: &str, device: &str, f: impl Fn(&Replica) -> T) -> Sample {
    let mut replica = None;
    let sample = measure(|| {
        let r = Replica::open(path, member, device).expect("open replica");
        std::hint::black_box(f(&r));
        replica = Some(r);
    });
    drop(replica);
    sample
}

/// The benchmark name filter criterion was given (its positional argument), if any.
/// Sections whose names do not contain it are skipped, fixtures included.
fn name_filter() -> Option<String> {
    const TAKES_VALUE: &[&str] = &[
        "--color", "-c", "--save-baseline", "-s", "--baseline", "-b", "--baseline-lenient", "--load-baseline",
        "--sample-size", "--warm-up-time", "--measurement-time", "--nresamples", "--noise-threshold",
        "--confidence-level", "--significance-level", "--profile-time", "--format", "--plotting-backend",
        "--output-format",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if TAKES_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

fn main() {
    let quick = test_mode();
    let Sizes { member_households, member_visits, coordinator_households, record_calls, open_samples, overview_samples } =
        Sizes::from_env(quick);
    let filter = name_filter();
    let selected = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));

    let mut c = Criterion::default().configure_from_args();
    let dir = tempfile::Builder::new().prefix("doorstep-bench-").tempdir_in(bench_dir()).expect("temp dir");
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let load_at_start = load_average();

    let member = (selected("record_visit/durable") || selected("member/open_and_list_households")).then(|| {
        let t = Instant::now();
        let member = member_fixture(dir.path(), member_households, member_visits);
        notes.push(format!(
            "member fixture: {member_households} households x {member_visits} visits (a third with 1-2 issues), \
             built in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        member
    });

    // ----- a. record one visit, durably -----
    if let Some(member) = member.as_ref().filter(|_| selected("record_visit/durable")) {
        let mut recorder = Recorder::new(member, dir.path().join("record.sqlite3"), Some(Role::Member));
        let mut unchecked = Recorder::new(member, dir.path().join("record-unchecked.sqlite3"), None);
        let (samples, unchecked_samples): (Vec<Sample>, Vec<Sample>) =
            (0..record_calls).map(|_| (recorder.record_one(), unchecked.record_one())).unzip();
        notes.extend(breakdown("record_visit, durable", &samples));
        rows.push(row(
            format!("record_visit, durable (file on {}, WAL, synchronous=FULL; member's rules checked)", fs_name()),
            &samples,
            Target::Percentiles(Duration::from_millis(1), Duration::from_millis(5)),
        ));
        rows.push(row(
            "record_visit, durable, role not known yet (no check; diagnostic, alternated with the row above)",
            &unchecked_samples,
            Target::None,
        ));
        c.bench_function("record_visit/durable", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| recorder.record_one().wall).sum())
        });
        if !quick {
            // The same calls with the file on tmpfs, where fsync costs nothing.
            if let Some(shm) = tmpfs_dir() {
                let shm_dir = tempfile::Builder::new().prefix("doorstep-bench-").tempdir_in(shm).expect("tmpfs dir");
                let mut recorder = Recorder::new(member, shm_dir.path().join("record.sqlite3"), Some(Role::Member));
                let samples: Vec<Sample> = (0..record_calls.min(1_000)).map(|_| recorder.record_one()).collect();
                notes.extend(breakdown("record_visit on tmpfs", &samples));
                rows.push(row("record_visit, file on tmpfs (fsync free; diagnostic)", &samples, Target::None));
            }
            // How the cost grows with the visits already in the household.
            notes.push(record_cost_by_household_size(dir.path()));
        }
    }

    // ----- b. open a member's replica and list households -----
    if let Some(member) = member.as_ref().filter(|_| selected("member/open_and_list_households")) {
        let path = dir.path().join("member-open.sqlite3");
        std::fs::copy(&member.path, &path).expect("copy member fixture");
        let list = |r: &Replica| {
            let list = r.list_households().expect("list households");
            assert_eq!(list.len(), member_households);
            list.iter().map(|h| h.open_issue_count).sum::<u32>()
        };
        let open_issues = list(&Replica::open(&path, MEMBER_ID, MEMBER_DEVICE).unwrap());
        notes.push(format!("member replica: {open_issues} open issues over {member_households} households"));
        let samples: Vec<Sample> =
            (0..open_samples).map(|_| time_open(&path, MEMBER_ID, MEMBER_DEVICE, list)).collect();
        rows.push(row(
            format!("open + list_households, member ({member_households} households x {member_visits} visits)"),
            &samples,
            Target::Median(Duration::from_millis(20)),
        ));
        c.bench_function("member/open_and_list_households", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| time_open(&path, MEMBER_ID, MEMBER_DEVICE, list).wall).sum())
        });
    }

    // ----- c. coordinator: open + overview -----
    if selected("coordinator/open_and_overview") {
        let path = dir.path().join("coordinator.sqlite3");
        let members: Vec<String> = (0..400).map(|i| format!("m-{i:03}")).collect();
        let t = Instant::now();
        let changes = build_changes(coordinator_households, Shape { visits: 5, issues: |_| 1 }, &members, 2026, 2);
        let built = t.elapsed();
        let change_count: usize = changes.iter().map(|h| h.changes.len()).sum();
        let t = Instant::now();
        {
            let replica = Replica::open(&path, COORDINATOR_ID, COORDINATOR_DEVICE).expect("open coordinator");
            import_all(&replica, &changes);
        }
        let imported = t.elapsed();
        drop(changes);
        let db_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (chunk_bytes, visits, issues) = {
            let conn = rusqlite::Connection::open(&path).unwrap();
            let q = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
            (
                q("SELECT coalesce(sum(length(data)), 0) FROM doc_chunks"),
                q("SELECT count(*) FROM visits"),
                q("SELECT count(*) FROM issues"),
            )
        };
        let per_household = |bytes: u64| bytes / coordinator_households.max(1) as u64;
        notes.push(format!(
            "coordinator fixture: {coordinator_households} households, {visits} visits, {issues} issues, \
             {change_count} changes; built in memory in {:.1} s (2 threads), imported in {:.1} s \
             (import_changes, {IMPORT_BATCH} households per call)",
            built.as_secs_f64(),
            imported.as_secs_f64()
        ));
        notes.push(format!(
            "coordinator file: {:.1} MB = {} bytes per household (Automerge chunks {} bytes per household, \
             the rest projection tables and indexes)",
            db_bytes as f64 / 1e6,
            per_household(db_bytes),
            per_household(chunk_bytes as u64)
        ));
        let overview = |r: &Replica| {
            let o = r.overview(TODAY).expect("overview");
            assert_eq!(o.iter().map(|c| c.households as usize).sum::<usize>(), coordinator_households);
            o
        };
        let o = overview(&Replica::open(&path, COORDINATOR_ID, COORDINATOR_DEVICE).unwrap());
        notes.push(format!(
            "overview({TODAY}): {} communities, {} open and {} overdue issues",
            o.len(),
            o.iter().map(|c| c.open_issues).sum::<u32>(),
            o.iter().map(|c| c.overdue_issues).sum::<u32>()
        ));
        let samples: Vec<Sample> =
            (0..overview_samples).map(|_| time_open(&path, COORDINATOR_ID, COORDINATOR_DEVICE, overview)).collect();
        rows.push(row(
            format!("open + overview, coordinator ({coordinator_households} households x 5 visits + 1 issue)"),
            &samples,
            Target::Median(Duration::from_millis(200)),
        ));
        let mut group = c.benchmark_group("coordinator");
        group.sample_size(20).measurement_time(Duration::from_secs(10));
        group.bench_function("open_and_overview", |b| {
            b.iter_custom(|iters| {
                (0..iters).map(|_| time_open(&path, COORDINATOR_ID, COORDINATOR_DEVICE, overview).wall).sum()
            })
        });
        group.finish();
        if !quick {
            let list = |r: &Replica| r.list_households().expect("list").len();
            let samples: Vec<Sample> =
                (0..10).map(|_| time_open(&path, COORDINATOR_ID, COORDINATOR_DEVICE, list)).collect();
            rows.push(row("open + list_households, coordinator (diagnostic)", &samples, Target::None));
        }
    }

    c.final_summary();
    notes.push(format!("load average (1/5/15 min) at start: {load_at_start}; at end: {}", load_average()));
    print_summary(&rows, &notes, quick);
}

/// Where the bench's files go: `DOORSTEP_BENCH_DIR`, else the system temp dir.
fn bench_dir() -> PathBuf {
    std::env::var_os("DOORSTEP_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

fn tmpfs_dir() -> Option<&'static Path> {
    let p = Path::new("/dev/shm");
    p.is_dir().then_some(p)
}

/// `/proc/loadavg`'s first three fields: other work on the machine skews the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The file system type of the bench dir, from /proc/mounts (Linux), for the table.
fn fs_name() -> String {
    let dir = bench_dir().canonicalize().unwrap_or_else(|_| bench_dir());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && dir.starts_with(f[1])).then(|| (f[1].len(), f[2].to_string()))
        })
        .max()
        .map(|(_, fs)| fs)
        .unwrap_or_else(|| "disk".into())
}

/// Record 120 visits into one fresh household and report the median cost (wall and
/// on-CPU) by how many visits it already held.
fn record_cost_by_household_size(dir: &Path) -> String {
    let path = dir.join("growth.sqlite3");
    let replica = Replica::open(&path, MEMBER_ID, MEMBER_DEVICE).unwrap();
    let rng = &mut StdRng::seed_from_u64(5);
    let household = replica.create_household(&new_household(rng, &[MEMBER_ID.to_string()])).unwrap();
    let ctx = NoteContext::of(&household);
    let samples: Vec<Sample> = (0..120)
        .map(|day| {
            let visit = new_visit(rng, &household.id, day, &ctx);
            measure(|| replica.record_visit(&visit).unwrap())
        })
        .collect();
    let windows = [(0, 5), (8, 13), (18, 23), (48, 53), (98, 103), (115, 120)];
    let parts: Vec<String> = windows
        .iter()
        .map(|&(a, b)| {
            let w = &samples[a..b];
            let wall = stats(w.iter().map(|s| s.wall).collect()).p50;
            let cpu: Option<Vec<Duration>> = w.iter().map(|s| s.cpu).collect();
            match cpu {
                Some(cpu) => format!("{a}: {} ms ({} ms on-CPU)", ms(wall), ms(stats(cpu).p50)),
                None => format!("{a}: {} ms", ms(wall)),
            }
        })
        .collect();
    drop(replica);
    remove_db(&path);
    format!("record_visit median by visits already in the household: {}", parts.join(", "))
}

fn print_summary(rows: &[Row], notes: &[String], quick: bool) {
    println!();
    println!("Doorstep replica benchmarks{}", if quick { " (TEST MODE: small sizes, not figures)" } else { "" });
    println!("| measurement | n | p50 (ms) | p99 (ms) | max (ms) | mean (ms) | on-CPU p50 (ms) | target | met |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.what,
            r.stats.n,
            ms(r.stats.p50),
            ms(r.stats.p99),
            ms(r.stats.max),
            ms(r.stats.mean),
            r.cpu_p50.map(ms).unwrap_or_else(|| "-".into()),
            r.target.text(),
            r.target.met(&r.stats)
        );
    }
    println!();
    for n in notes {
        println!("- {n}");
    }
}
