//! Test support: the real `doorstep-server` binary on a loopback port, and helpers to
//! set up a district through its admin API.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use doorstep_core::{NewVisit, Replica, SyncOptions, VisitMode, VisitTopic};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    /// Where the server's stderr (its logs, and any panic message) goes.
    pub log: PathBuf,
    /// What it printed on stdout before it listened (`serve --demo`'s tokens and codes).
    pub printed: Vec<String>,
}

impl Server {
    /// Start the server on a free loopback port with `data_dir`; wait until it listens.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_on(data_dir, "127.0.0.1:0")
    }

    pub fn start_on(data_dir: &Path, listen: &str) -> Server {
        Self::start_with(data_dir, listen, &[])
    }

    /// Start with extra `serve` arguments (e.g. `--config FILE`); panics if it cannot.
    pub fn start_with(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        Self::try_start_with(data_dir, listen, extra).unwrap_or_else(|e| panic!("the server starts: {e}"))
    }

    /// Start the server; an error if it exits or does not listen within 30 s.
    pub fn try_start_with(data_dir: &Path, listen: &str, extra: &[&str]) -> Result<Server, String> {
        let log = data_dir.with_extension("log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_doorstep-server"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("DOORSTEP_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| format!("the server binary does not start: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut before = Vec::new();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("doorstep-server listening on ") {
                    let _ = tx.send((url.to_string(), before));
                    break;
                }
                before.push(line);
            }
            for _ in lines {}
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((url, printed)) => Ok(Server { child, url, data_dir: data_dir.to_path_buf(), log, printed }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                Err(format!("the server did not listen on {listen}: {tail}"))
            }
        }
    }

    /// Kill the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ask the server to stop (SIGTERM, as `systemctl stop` does) and wait at most
    /// `within` for it to exit: its exit status, or `None` if it had to be killed.
    pub fn stop(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(sent.as_ref().is_ok_and(|s| s.success()), "SIGTERM sent: {sent:?}");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Address (host:port) it listens on.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `/healthz` answers `ok`.
    pub fn healthy(&self) -> bool {
        http()
            .get(format!("{}/healthz", self.url))
            .timeout(Duration::from_secs(10))
            .send()
            .ok()
            .filter(|r| r.status().as_u16() == 200)
            .and_then(|r| r.text().ok())
            .is_some_and(|t| t == "ok")
    }

    /// The server answers `/healthz` and never logged a panic.
    pub fn assert_sound(&self) {
        assert!(self.healthy(), "the server still answers /healthz");
        assert_no_panic(&self.log);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The server answers `/healthz`, and every panic in its log is one it contained while
/// merging a change (set off in Automerge by a malformed change, which is then held in
/// quarantine with the panic as its reason). Returns how many there were.
pub fn assert_only_contained_panics(server: &Server) -> usize {
    assert!(server.healthy(), "the server still answers /healthz");
    let text = std::fs::read_to_string(&server.log).unwrap_or_default();
    let panics = text.matches("panicked at").count();
    let contained = text.matches("merging a change panicked").count();
    assert_eq!(panics, contained, "every panic was contained while merging a change:\n{text}");
    contained
}

/// No server started with this log ever panicked.
pub fn assert_no_panic(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!text.contains("panicked"), "the server panicked:\n{text}");
}

/// Run the `doorstep-server` command line with `args` (a subcommand and its arguments);
/// returns whether it succeeded, its stdout and its stderr.
pub fn command(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_doorstep-server"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DOORSTEP_DATA_DIR")
        .output()
        .expect("the command runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A path as a command-line argument (test paths are UTF-8).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Create the first admin with the CLI (the server must not be running on `data_dir`,
/// or it must be fresh) and return the token.
pub fn create_admin(data_dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_doorstep-server"))
        .args(["admin", "--data-dir"])
        .arg(data_dir)
        .args(["create-admin", "admin", "管理员"])
        .output()
        .expect("the admin command runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["token"].as_str().unwrap().to_string()
}

/// One shared HTTP client (building one per request is slow in debug builds).
pub fn http() -> reqwest::blocking::Client {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("a client builds")
        })
        .clone()
}

/// POST JSON with a token; the status and the JSON answer.
pub fn post(url: &str, token: &str, body: Value) -> (u16, Value) {
    let r = http().post(url).bearer_auth(token).json(&body).send().expect("request sent");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

pub fn get(url: &str, token: &str) -> (u16, Value) {
    let r = http().get(url).bearer_auth(token).send().expect("request sent");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// A real server on a fresh temporary data directory, with its admin's token: what most
/// tests start from.
pub struct District {
    // Declared first, so dropped first: the server stops before its directory goes.
    pub server: Server,
    pub data: PathBuf,
    pub admin_token: String,
    pub dir: tempfile::TempDir,
}

impl District {
    pub fn start() -> District {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("server");
        let admin_token = create_admin(&data);
        let server = Server::start(&data);
        District { server, data, admin_token, dir }
    }

    /// The admin, through the JSON API.
    pub fn admin(&self) -> Admin<'_> {
        Admin { server: &self.server, token: self.admin_token.clone() }
    }

    /// Stop the server and start it again on the same data directory.
    pub fn restart(&mut self) {
        self.server.kill();
        self.server = Server::start(&self.data);
    }

    /// A phone (its replica file named `name`) for `member`, with a newly enrolled device.
    pub fn phone(&self, name: &str, member: &str) -> Phone {
        Phone::new(self.dir.path(), name, member, self.admin().device(member))
    }
}

/// Admin API helpers.
pub struct Admin<'a> {
    pub server: &'a Server,
    pub token: String,
}

impl Admin<'_> {
    pub fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = post(&format!("{}{}", self.server.url, path), &self.token, body.clone());
        assert_eq!(status, 200, "{path} {body}: {v}");
        v
    }

    /// GET `path` as the admin; asserts 200.
    pub fn get_ok(&self, path: &str) -> Value {
        let (status, v) = get(&format!("{}{}", self.server.url, path), &self.token);
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    pub fn branch(&self, id: &str) {
        self.ok("/v1/admin/branches", json!({"id": id, "name": format!("{id} 支部")}));
    }

    pub fn community(&self, id: &str) {
        self.ok("/v1/admin/communities", json!({"id": id, "name": format!("{id} 社区")}));
    }

    pub fn member(&self, id: &str, branch: &str) {
        self.ok("/v1/admin/members", json!({"id": id, "name": id, "role": "member", "branch_id": branch}));
    }

    /// Branch `b1`, communities `c1` (and more, if named), and `members` in `b1`.
    pub fn branch_b1(&self, communities: &[&str], members: &[&str]) {
        self.branch("b1");
        for c in communities {
            self.community(c);
        }
        for m in members {
            self.member(m, "b1");
        }
    }

    pub fn coordinator(&self, id: &str, branches: &[&str], communities: &[&str]) {
        self.ok(
            "/v1/admin/members",
            json!({"id": id, "name": id, "role": "coordinator", "scope_branches": branches, "scope_communities": communities}),
        );
    }

    pub fn household(&self, family: &str, community: &str, branch: &str, members: &[&str]) -> String {
        let v = self.ok(
            "/v1/admin/households",
            json!({"family_name": family, "community_id": community, "branch_id": branch, "assigned_members": members}),
        );
        v["id"].as_str().unwrap().to_string()
    }

    pub fn assign(&self, household: &str, member: &str, assigned: bool) {
        self.ok(
            &format!("/v1/admin/households/{household}/assignment"),
            json!({"member_id": member, "assigned": assigned}),
        );
    }

    /// Enrol a device for a member: returns (device id, token).
    pub fn device(&self, member: &str) -> (String, String) {
        let e = self.ok("/v1/admin/devices", json!({"member_id": member, "label": "test phone"}));
        let code = e["enrolment_code"].as_str().unwrap();
        let r = http().post(format!("{}/v1/enrol", self.server.url)).json(&json!({"code": code})).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let t: Value = r.json().unwrap();
        (t["device_id"].as_str().unwrap().to_string(), t["token"].as_str().unwrap().to_string())
    }

    pub fn revoke(&self, device_id: &str) {
        self.ok(&format!("/v1/admin/devices/{device_id}/revoke"), json!({}));
    }

    /// Ids of every visit the coordinator API lists (admin scope: all), in its order.
    pub fn visit_ids(&self) -> Vec<String> {
        ids(&self.get_ok("/v1/visits"))
    }

    /// The quarantine list (`status`: None for all, or "held", "released", "discarded").
    pub fn quarantine(&self, status: Option<&str>) -> Vec<Value> {
        let path = match status {
            Some(s) => format!("/v1/admin/quarantine?status={s}"),
            None => "/v1/admin/quarantine".to_string(),
        };
        self.get_ok(&path).as_array().expect("a list").clone()
    }
}

/// The `id` of every object in a JSON array.
pub fn ids(list: &Value) -> Vec<String> {
    list.as_array().expect("a JSON list").iter().map(|v| v["id"].as_str().expect("an id").to_string()).collect()
}

/// A read-only connection to the server's store, beside the running server.
pub fn store_reader(data_dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join(doorstep_server::store::data_dir::STORE_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the store opens read-only");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// Rows of the server's change log and quarantine, read from its SQLite file (read-only,
/// beside the running server).
pub fn store_counts(data_dir: &Path) -> (i64, i64) {
    let conn = store_reader(data_dir);
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).expect("a count");
    (count("SELECT count(*) FROM change_log"), count("SELECT count(*) FROM quarantine"))
}

/// Copy a directory's files (a stopped server's data directory: the SQLite file with its
/// WAL) to `to`, replacing what was there.
pub fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A visit to record.
pub fn new_visit(household: &str, at: i64, notes: &str) -> NewVisit {
    NewVisit {
        household_id: household.into(),
        visitors: vec![],
        started_at_ms: at,
        ended_at_ms: Some(at + 1_800_000),
        mode: VisitMode::InPerson,
        people_met: vec!["母亲".into()],
        topics: vec![VisitTopic::EnrolmentPolicy],
        notes: notes.into(),
        follow_up_on: None,
        location: None,
    }
}

/// A random source seeded from the clock unless `DOORSTEP_TEST_SEED` is set; the seed is
/// printed so a failure can be replayed.
pub fn rng_from_env(name: &str) -> StdRng {
    let seed = std::env::var("DOORSTEP_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("{name}: DOORSTEP_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// A phone: a real replica file and a device token.
pub struct Phone {
    pub replica: Replica,
    pub token: String,
    pub device_id: String,
}

impl Phone {
    pub fn new(dir: &Path, name: &str, member: &str, device: (String, String)) -> Phone {
        let replica = Replica::open(dir.join(format!("{name}.sqlite3")), member, &device.0).unwrap();
        Phone { replica, token: device.1, device_id: device.0 }
    }

    pub fn sync(&self, server: &Server) -> doorstep_core::Result<doorstep_core::SyncReport> {
        self.sync_url(&server.url)
    }

    pub fn sync_url(&self, url: &str) -> doorstep_core::Result<doorstep_core::SyncReport> {
        self.sync_with(url, &SyncOptions::default())
    }

    pub fn sync_with(&self, url: &str, options: &SyncOptions) -> doorstep_core::Result<doorstep_core::SyncReport> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(doorstep_core::sync(&self.replica, url, &self.token, options))
    }

    /// Ids of the households on the phone.
    pub fn household_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.replica.list_households().unwrap().into_iter().map(|h| h.id).collect();
        ids.sort();
        ids
    }

    /// Ids of the visits of a household on the phone.
    pub fn visit_ids(&self, household: &str) -> Vec<String> {
        self.replica.visits(household).unwrap().into_iter().map(|v| v.id).collect()
    }
}

/// A problem to raise.
pub fn new_issue(household: &str, title: &str) -> doorstep_core::NewIssue {
    doorstep_core::NewIssue {
        household_id: household.into(),
        visit_id: None,
        category: doorstep_core::IssueCategory::Enrolment,
        title: title.into(),
        description: "材料不清楚".into(),
        urgency: doorstep_core::Urgency::Normal,
        assignee: None,
        due_on: Some("2026-12-01".into()),
    }
}

/// Hand a household's document from one phone to another outside the server (a peer
/// exchange), as a phone that was never given it might obtain it.
/// Make `phone` behind on its member's role: the member becomes a coordinator of `branch`,
/// the phone syncs and hears it, and the member is made a member of `branch` again. Not
/// having heard that, the phone lets the member make changes only coordinators may (a
/// member's phone that knows refuses them itself), and the server holds them.
pub fn behind_on_role(admin: &Admin, phone: &Phone, branch: &str) {
    let member = phone.replica.member_id();
    admin.coordinator(&member, &[branch], &[]);
    phone.sync(admin.server).unwrap();
    admin.member(&member, branch);
    assert_eq!(phone.replica.role(), Some(doorstep_core::Role::Coordinator));
}

pub fn hand_over(from: &Phone, to: &Phone, household: &str) {
    let batches: Vec<_> =
        from.replica.export_changes(&[]).unwrap().into_iter().filter(|b| b.household_id == household).collect();
    assert_eq!(batches.len(), 1, "{household} is on the giving phone");
    to.replica.import_changes(&batches).unwrap();
}

/// A raw sync request, encoded as a phone sends it; the answer's status and text.
pub fn raw_sync(url: &str, token: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let (status, body) = raw_sync_bytes(url, token, body);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A raw sync request; the answer's status and bytes (an encoded `SyncResponse` on 200).
pub fn raw_sync_bytes(url: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Vec<u8>) {
    let mut r = http()
        .post(format!("{url}/v1/sync"))
        .header("content-type", doorstep_core::sync::protocol::CONTENT_TYPE)
        .body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().expect("request sent and answered");
    let status = r.status().as_u16();
    (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
}

/// An empty first-sync request (no position, nothing pushed).
pub fn empty_sync_request() -> doorstep_core::sync::protocol::SyncRequest {
    doorstep_core::sync::protocol::SyncRequest::new(None, vec![])
}

/// A new device of `member` syncs for the first time (protocol level): its token, the
/// answer, and `household` as it received it whole.
pub fn first_sync(district: &District, member: &str, household: &str) -> (String, doorstep_core::sync::protocol::SyncResponse, doorstep_core::HouseholdDocument) {
    let (_, token) = district.admin().device(member);
    let (status, body) = raw_sync_bytes(&district.server.url, Some(&token), doorstep_core::sync::protocol::encode(&empty_sync_request()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = doorstep_core::sync::protocol::SyncResponse::decode(&body, 64 << 20).expect("a sync answer");
    let whole = answer.whole.as_ref().expect("whole documents").load(&automerge::ActorId::random()).expect("they load");
    let (doc, _) = whole.into_iter().find(|(doc, _)| doc.id() == household).expect("the household, whole");
    (token, answer, doc)
}
