//! Test support: the real `doorstep-server` binary on a loopback port, and helpers to
//! set up a district through its admin API.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use doorstep_core::{Replica, SyncOptions};
use serde_json::{json, Value};

pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
}

impl Server {
    /// Start the server on a free loopback port with `data_dir`; wait until it listens.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_on(data_dir, "127.0.0.1:0")
    }

    pub fn start_on(data_dir: &Path, listen: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_doorstep-server"))
            .args(["serve", "--listen", listen, "--data-dir"])
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
        Server { child, url, data_dir: data_dir.to_path_buf() }
    }

    /// Kill the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Address (host:port) it listens on.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
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

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
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

    pub fn branch(&self, id: &str) {
        self.ok("/v1/admin/branches", json!({"id": id, "name": format!("{id} 支部")}));
    }

    pub fn community(&self, id: &str) {
        self.ok("/v1/admin/communities", json!({"id": id, "name": format!("{id} 社区")}));
    }

    pub fn member(&self, id: &str, branch: &str) {
        self.ok("/v1/admin/members", json!({"id": id, "name": id, "role": "member", "branch_id": branch}));
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
        self.ok(&format!("/v1/admin/households/{household}/assignment"), json!({"member_id": member, "assigned": assigned}));
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
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(doorstep_core::sync(&self.replica, &server.url, &self.token, &SyncOptions::default()))
    }

    pub fn sync_url(&self, url: &str) -> doorstep_core::Result<doorstep_core::SyncReport> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(doorstep_core::sync(&self.replica, url, &self.token, &SyncOptions::default()))
    }
}
