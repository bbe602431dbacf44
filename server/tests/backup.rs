//! The data directory in operators' hands, real processes:
//! (a) one process at a time: a second server, or an admin command while the server
//!     runs, is refused with a message and writes nothing;
//! (b) a backup taken while phones sync holds every change acknowledged before it began,
//!     and restored into a new directory, a server starts on it;
//! (c) restore refuses a running server's directory and files that are not backups,
//!     changing nothing; it keeps the store it replaces; phones then bring back what the
//!     backup lacks;
//! (d) an admin downloads a backup through the API (`GET /v1/admin/backup`), which leaves
//!     nothing behind on the server, and it restores like one written by the command;
//! (e) a phone enrolled after the backup, unknown to the restored server, is enrolled
//!     again under its own id and gives back what it recorded;
//! (f) the server backs up on its own schedule (`[backups]`): it keeps the newest, deletes
//!     what a backup cut short left and nothing else, follows the newest backup after a
//!     restart, counts a failed backup and tries again while the server goes on, and its
//!     backups restore.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// Rows of `table` with `id`, read beside the running server.
fn rows_with_id(data_dir: &Path, table: &str, id: &str) -> i64 {
    store_reader(data_dir).query_row(&format!("SELECT count(*) FROM {table} WHERE id = ?1"), [id], |r| r.get(0)).unwrap()
}

/// A district with member m1 in branch b1 and one household of theirs.
fn district_with_a_household() -> (District, String) {
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1"]);
    let h = admin.household("甲", "c1", "b1", &["m1"]);
    (district, h)
}

/// m1's phone, newly enrolled, after its first sync.
fn phone_of_m1(district: &District) -> Phone {
    let phone = district.phone("m1", "m1");
    phone.sync(&district.server).unwrap();
    phone
}

#[test]
fn only_one_process_at_a_time_works_on_a_data_directory() {
    let mut district = District::start();
    district.admin().branch("b1");
    let data = district.data.clone();
    let pid = district.server.child.id();

    let (ok, _, err) = command(&["admin", "--data-dir", arg(&data), "add-branch", "b2", "第二支部"]);
    assert!(!ok, "an admin command beside the running server is refused");
    assert!(err.contains(&format!("is in use by another process (pid {pid})")) && err.contains("/v1/admin/"), "{err}");
    assert_eq!(rows_with_id(&data, "branches", "b2"), 0, "the refused command wrote nothing");

    let second = Server::try_start_with(&data, "127.0.0.1:0", &[]);
    let Err(why) = second else { panic!("a second server on the same data directory started") };
    assert!(why.contains("is in use by another process"), "{why}");
    district.server.assert_sound();
    assert_eq!(rows_with_id(&data, "branches", "b1"), 1);

    // With the server stopped (even killed), the command works.
    district.server.kill();
    let (ok, _, err) = command(&["admin", "--data-dir", arg(&data), "add-branch", "b2", "第二支部"]);
    assert!(ok, "{err}");
    assert_eq!(rows_with_id(&data, "branches", "b2"), 1);
    let (ok, out, err) = command(&["admin", "--data-dir", arg(&data), "devices", "--member", "admin"]);
    assert!(ok, "{err}");
    let devices: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(devices.as_array().map(Vec::len), Some(1), "the admin's own: {devices}");
    let (ok, out, err) = command(&["admin", "--data-dir", arg(&data), "organisation"]);
    assert!(ok, "{err}");
    let org: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&org["branches"]), vec!["b1", "b2"]);
    district.restart();
    district.admin().member("m1", "b2");
    district.server.assert_sound();
}

#[test]
fn a_backup_taken_while_phones_sync_holds_every_change_acknowledged_before_it() {
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1", "m2", "m3"]);
    let members = ["m1", "m2", "m3"];
    let households: Vec<String> = members.iter().map(|m| admin.household(&format!("{m}家"), "c1", "b1", &[m])).collect();
    let phones: Vec<Phone> = members.iter().map(|m| district.phone(m, m)).collect();
    for phone in &phones {
        phone.sync(&district.server).unwrap();
    }
    let backup = district.dir.path().join("backup.sqlite3");
    // A long read beside the server (as a big report would be) keeps what commits from
    // here on in the write-ahead log, out of the database file: the backup must read both.
    let reader = store_reader(&district.data);
    reader.execute_batch("BEGIN").unwrap();
    let logged: i64 = reader.query_row("SELECT count(*) FROM change_log", [], |r| r.get(0)).unwrap();

    // Each phone records a visit and syncs, over and over. Its visits are acknowledged
    // once a sync returns with its outbox empty.
    let stop = AtomicBool::new(false);
    let recorded = Mutex::new(BTreeSet::new());
    let acknowledged = Mutex::new(BTreeSet::new());
    let recorded_after_backup = Mutex::new(BTreeSet::new());
    let backed_up = AtomicBool::new(false);
    let (before, after) = std::thread::scope(|s| {
        for (phone, household) in phones.iter().zip(&households) {
            let (stop, recorded, acknowledged) = (&stop, &recorded, &acknowledged);
            let (backed_up, recorded_after_backup) = (&backed_up, &recorded_after_backup);
            let url = district.server.url.clone();
            s.spawn(move || {
                let mut mine = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let after_backup = backed_up.load(Ordering::SeqCst);
                    let id = phone.replica.record_visit(&new_visit(household, 1_000 + i, "备份时的走访")).unwrap().id;
                    recorded.lock().unwrap().insert(id.clone());
                    if after_backup {
                        recorded_after_backup.lock().unwrap().insert(id.clone());
                    }
                    mine.push(id);
                    phone.sync_url(&url).unwrap();
                    if phone.replica.pending_changes().unwrap().is_empty() {
                        acknowledged.lock().unwrap().extend(mine.drain(..));
                    }
                }
            });
        }
        let wait_for = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acknowledged.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "the phones stopped syncing");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for(9);
        let before = acknowledged.lock().unwrap().clone();
        let (ok, out, err) = command(&["backup", "--data-dir", arg(&district.data), arg(&backup)]);
        backed_up.store(true, Ordering::SeqCst);
        assert!(ok, "{err}");
        assert!(out.contains("backup written"), "{out}");
        wait_for(before.len() + 9);
        stop.store(true, Ordering::SeqCst);
        (before, acknowledged.lock().unwrap().clone())
    });
    assert!(after.len() > before.len());
    let still: i64 = reader.query_row("SELECT count(*) FROM change_log", [], |r| r.get(0)).unwrap();
    assert_eq!(still, logged, "the read went on over the whole backup");
    drop(reader);

    // The backup is a sound SQLite file.
    let conn = rusqlite::Connection::open_with_flags(&backup, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    drop(conn);

    // Restored into a new directory, a server starts on it with what had been
    // acknowledged before the backup began, and nothing recorded after it ended.
    let restored = district.dir.path().join("restored");
    let (ok, out, err) = command(&["restore", "--data-dir", arg(&restored), arg(&backup)]);
    assert!(ok, "{err}");
    assert!(out.contains("restored") && !out.contains("kept in"), "nothing to keep aside: {out}");
    let server = Server::start(&restored);
    let admin = Admin { server: &server, token: district.admin_token.clone() };
    let visits: BTreeSet<String> = admin.visit_ids().into_iter().collect();
    assert!(before.is_subset(&visits), "missing from the backup: {:?}", before.difference(&visits).collect::<Vec<_>>());
    let recorded = recorded.into_inner().unwrap();
    assert!(visits.is_subset(&recorded));
    let recorded_after_backup = recorded_after_backup.into_inner().unwrap();
    assert!(!recorded_after_backup.is_empty());
    assert!(visits.is_disjoint(&recorded_after_backup), "the backup holds visits recorded after it was written");
    server.assert_sound();
    district.server.assert_sound();
}

#[test]
fn restore_refuses_what_is_not_a_backup_and_a_directory_in_use_and_keeps_the_store_it_replaces() {
    let (mut district, h) = district_with_a_household();
    let phone = phone_of_m1(&district);
    let v1 = phone.replica.record_visit(&new_visit(&h, 1_000, "备份之前")).unwrap().id;
    phone.sync(&district.server).unwrap();
    let data = district.data.clone();
    let backup = district.dir.path().join("backup.sqlite3");
    let (ok, _, err) = command(&["backup", "--data-dir", arg(&data), arg(&backup)]);
    assert!(ok, "{err}");
    let v2 = phone.replica.record_visit(&new_visit(&h, 2_000, "备份之后")).unwrap().id;
    phone.sync(&district.server).unwrap();
    assert!(phone.replica.pending_changes().unwrap().is_empty());

    // A backup never replaces a file.
    let written = std::fs::read(&backup).unwrap();
    let (ok, _, err) = command(&["backup", "--data-dir", arg(&data), arg(&backup)]);
    assert!(!ok && err.contains("never replaces a file"), "{err}");
    assert_eq!(std::fs::read(&backup).unwrap(), written);
    let nowhere = district.dir.path().join("no such directory").join("backup.sqlite3");
    let (ok, _, err) = command(&["backup", "--data-dir", arg(&data), arg(&nowhere)]);
    assert!(!ok && err.contains("there is no directory"), "{err}");

    // Restoring over the running server is refused.
    let (ok, _, err) = command(&["restore", "--data-dir", arg(&data), arg(&backup)]);
    assert!(!ok && err.contains("is in use by another process"), "{err}");
    assert_eq!(district.admin().visit_ids(), vec![v1.clone(), v2.clone()]);
    district.server.kill();

    // Files that are not backups are refused, the store untouched.
    let garbage = district.dir.path().join("garbage.sqlite3");
    std::fs::write(&garbage, b"not a database at all, just some bytes ".repeat(200)).unwrap();
    let other_app = district.dir.path().join("other.sqlite3");
    rusqlite::Connection::open(&other_app).unwrap().execute_batch("CREATE TABLE notes (text TEXT);").unwrap();
    let truncated = district.dir.path().join("truncated.sqlite3");
    std::fs::write(&truncated, &written[..written.len() / 2]).unwrap();
    // Whole but for one page: the change log's root, overwritten.
    let damaged = district.dir.path().join("damaged.sqlite3");
    let (page, page_size) = {
        let conn = rusqlite::Connection::open_with_flags(&backup, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let root: usize = conn.query_row("SELECT rootpage FROM sqlite_master WHERE name = 'change_log'", [], |r| r.get(0)).unwrap();
        (root, conn.query_row("PRAGMA page_size", [], |r| r.get::<_, usize>(0)).unwrap())
    };
    let mut bytes = written.clone();
    bytes[(page - 1) * page_size..page * page_size].fill(0xA5);
    std::fs::write(&damaged, bytes).unwrap();
    for bad in [&garbage, &other_app, &truncated, &damaged] {
        let (ok, _, err) = command(&["restore", "--data-dir", arg(&data), arg(bad)]);
        assert!(!ok && err.contains("is not a Doorstep backup"), "{}: {err}", bad.display());
    }
    let (ok, _, err) = command(&["restore", "--data-dir", arg(&data), arg(&district.dir.path().join("missing"))]);
    assert!(!ok, "{err}");
    let entries: Vec<String> =
        std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!entries.iter().any(|e| e.starts_with("replaced-") || e == "restoring"), "{entries:?}");
    district.restart();
    assert_eq!(district.admin().visit_ids(), vec![v1.clone(), v2.clone()], "nothing changed");
    district.server.kill();

    // The backup goes back in place; the store it replaced is kept, whole.
    let (ok, out, err) = command(&["restore", "--data-dir", arg(&data), arg(&backup)]);
    assert!(ok, "{err}");
    let kept = out.lines().find_map(|l| l.split("kept in: ").nth(1)).expect("where the replaced store went").to_string();
    district.restart();
    assert_eq!(district.admin().visit_ids(), vec![v1.clone()], "the store is the backup");
    {
        let replaced = Server::start(Path::new(&kept));
        let admin = Admin { server: &replaced, token: district.admin_token.clone() };
        assert_eq!(admin.visit_ids(), vec![v1.clone(), v2.clone()], "the replaced store keeps everything");
    }

    // The phone's next sync gives back what the backup lacks.
    phone.sync(&district.server).unwrap();
    assert_eq!(district.admin().visit_ids(), vec![v1.clone(), v2.clone()]);
    assert_eq!(phone.visit_ids(&h), vec![v1, v2]);
    district.server.assert_sound();
}

#[test]
fn an_admin_downloads_a_backup_through_the_api_and_it_restores() {
    let (district, h) = district_with_a_household();
    let phone = phone_of_m1(&district);
    let v1 = phone.replica.record_visit(&new_visit(&h, 1_000, "下载备份之前")).unwrap().id;
    phone.sync(&district.server).unwrap();

    let r = http().get(format!("{}/v1/admin/backup", district.server.url)).bearer_auth(&district.admin_token).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let header = |name: &str| r.headers()[name].to_str().unwrap().to_string();
    assert_eq!(header("content-type"), "application/vnd.sqlite3");
    assert!(header("content-disposition").starts_with("attachment; filename=\"doorstep-"), "{}", header("content-disposition"));
    let length: usize = header("content-length").parse().unwrap();
    let bytes = r.bytes().unwrap();
    assert_eq!(bytes.len(), length);
    let beside: Vec<String> = std::fs::read_dir(&district.data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("backup"))
        .collect();
    assert!(beside.is_empty(), "nothing left beside the store: {beside:?}");
    let v2 = phone.replica.record_visit(&new_visit(&h, 2_000, "下载备份之后")).unwrap().id;
    phone.sync(&district.server).unwrap();

    let file = district.dir.path().join("downloaded.sqlite3");
    std::fs::write(&file, &bytes).unwrap();
    let restored = district.dir.path().join("restored");
    let (ok, _, err) = command(&["restore", "--data-dir", arg(&restored), arg(&file)]);
    assert!(ok, "{err}");
    let server = Server::start(&restored);
    let admin = Admin { server: &server, token: district.admin_token.clone() };
    assert_eq!(admin.visit_ids(), vec![v1.clone()]);
    assert_eq!(district.admin().visit_ids(), vec![v1, v2]);
    server.assert_sound();
    district.server.assert_sound();
}

#[test]
fn a_phone_enrolled_after_the_backup_is_enrolled_again_under_its_id_and_loses_nothing() {
    let (mut district, h) = district_with_a_household();
    let backup = district.dir.path().join("backup.sqlite3");
    let (ok, _, err) = command(&["backup", "--data-dir", arg(&district.data), arg(&backup)]);
    assert!(ok, "{err}");
    // Enrolled after the backup: records, syncs, and the server acknowledges.
    let mut phone = phone_of_m1(&district);
    let visit = phone.replica.record_visit(&new_visit(&h, 1_000, "备份之后登记的手机")).unwrap().id;
    phone.sync(&district.server).unwrap();
    assert!(phone.replica.pending_changes().unwrap().is_empty());

    district.server.kill();
    let (ok, _, err) = command(&["restore", "--data-dir", arg(&district.data), arg(&backup)]);
    assert!(ok, "{err}");
    district.restart();
    // The restored server does not know the phone; the phone keeps its household.
    let refused = phone.sync(&district.server).unwrap_err();
    assert!(matches!(refused, doorstep_core::Error::Server { status: 401, .. }), "{refused:?}");
    assert!(district.admin().visit_ids().is_empty());
    assert_eq!(phone.visit_ids(&h), vec![visit.clone()]);

    // Ids that cannot be kept: one the server knows, and one that is not a device id.
    let admin = district.admin();
    let known = admin.device("m1").0;
    let url = format!("{}/v1/admin/devices", district.server.url);
    for (id, why) in [(known.as_str(), "is known here"), ("m1的手机", "is not a UUID")] {
        let (status, body) = post(&url, &district.admin_token, json!({"member_id": "m1", "device_id": id}));
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{body}");
    }

    // Enrolled again under its own id: the same replica, a new token.
    let enrolment = admin.ok("/v1/admin/devices", json!({"member_id": "m1", "device_id": phone.device_id}));
    assert_eq!(enrolment["device_id"], phone.device_id.as_str());
    let r = http()
        .post(format!("{}/v1/enrol", district.server.url))
        .json(&json!({"code": enrolment["enrolment_code"]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let token: serde_json::Value = r.json().unwrap();
    assert_eq!(token["device_id"], phone.device_id.as_str());
    phone.token = token["token"].as_str().unwrap().to_string();
    // Its position is unknown here: the reconciliation takes back what it recorded.
    for _ in 0..3 {
        phone.sync(&district.server).unwrap();
    }
    assert_eq!(district.admin().visit_ids(), vec![visit.clone()]);
    assert!(phone.replica.pending_changes().unwrap().is_empty());
    assert_eq!(phone.visit_ids(&h), vec![visit]);
    district.server.assert_sound();
}

/// A figure from `/metrics` (no token set).
fn metric(server: &Server, name: &str) -> i64 {
    let text = http().get(format!("{}/metrics", server.url)).send().unwrap().text().unwrap();
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("{name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The backups in `dir` the schedule wrote, oldest first.
fn scheduled_backups(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("doorstep-") && n.ends_with(".sqlite3"))
        .collect();
    names.sort();
    names
}

#[test]
fn the_server_backs_up_on_its_schedule_keeps_the_newest_and_they_restore() {
    let (mut district, h) = district_with_a_household();
    let backups = district.dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    std::fs::write(backups.join("notes.txt"), "not a backup").unwrap();
    std::fs::write(backups.join("doorstep-20200101T000000Z.sqlite3.partial"), "cut short by a crash").unwrap();
    let config = district.dir.path().join("doorstep.toml");
    let plan = |every: u64| {
        std::fs::write(&config, format!("[backups]\ndir = {:?}\nevery_seconds = {every}\nkeep = 2\n", backups)).unwrap();
    };
    plan(1);
    district.server.kill();
    district.server = Server::start_with(&district.data, "127.0.0.1:0", &["--config", arg(&config)]);
    let phone = phone_of_m1(&district);
    let visit = phone.replica.record_visit(&new_visit(&h, 1_000, "备份前的走访")).unwrap().id;
    assert_eq!(phone.sync(&district.server).unwrap().accepted, 1);

    // Two more backups begin after the visit was acknowledged (one a second; the first
    // came at once, there being none).
    let acknowledged_at = metric(&district.server, "doorstep_backups_taken_total");
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&district.server, "doorstep_backups_taken_total") < acknowledged_at + 2 {
        assert!(Instant::now() < deadline, "the schedule stalled");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&district.server, "doorstep_backups_failed_total"), 0);
    assert!(district.server.stop(Duration::from_secs(30)).is_some_and(|s| s.success()), "a clean stop");
    let kept = scheduled_backups(&backups);
    assert_eq!(kept.len(), 2, "the newest two: {kept:?}");
    let mut all: Vec<String> =
        std::fs::read_dir(&backups).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    all.sort();
    assert_eq!(all, [kept.clone(), vec!["notes.txt".to_string()]].concat(), "the partial file is gone, the notes kept");

    // The newest restores, with the visit.
    let restored_dir = district.dir.path().join("restored");
    let newest = backups.join(&kept[1]);
    let (ok, _, err) = command(&["restore", "--data-dir", arg(&restored_dir), arg(&newest)]);
    assert!(ok, "{err}");
    let restored = Server::start(&restored_dir);
    let admin = Admin { server: &restored, token: district.admin_token.clone() };
    assert!(admin.visit_ids().contains(&visit), "the visit is in the newest backup");
    drop(restored);

    // Started again with a backup an hour apart: the next is due an hour after the
    // newest, not at once.
    plan(3600);
    district.server = Server::start_with(&district.data, "127.0.0.1:0", &["--config", arg(&config)]);
    let newest_at = chrono::NaiveDateTime::parse_from_str(&kept[1]["doorstep-".len()..kept[1].len() - ".sqlite3".len()], "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc()
        .timestamp();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&district.server, "doorstep_backup_next_timestamp_seconds") == 0 {
        assert!(Instant::now() < deadline, "the schedule did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&district.server, "doorstep_backup_next_timestamp_seconds"), newest_at + 3600);
    assert_eq!(metric(&district.server, "doorstep_backups_taken_total"), 0);
    assert_eq!(scheduled_backups(&backups), kept);

    // Backups that fail (their names taken, here by directories, for the next minute):
    // counted, tried again, and the server goes on; once they can be written, they are.
    drop(district.server);
    plan(1);
    let now = chrono::Utc::now();
    // (Not the newest backup's own name, should it be this second's.)
    let taken: Vec<PathBuf> = (0..60)
        .map(|s| backups.join(format!("doorstep-{}.sqlite3", (now + chrono::Duration::seconds(s)).format("%Y%m%dT%H%M%SZ"))))
        .filter(|name| !name.exists())
        .collect();
    for dir in &taken {
        std::fs::create_dir(dir).unwrap();
    }
    district.server = Server::start_with(&district.data, "127.0.0.1:0", &["--config", arg(&config)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&district.server, "doorstep_backups_failed_total") < 2 {
        assert!(Instant::now() < deadline, "no failed backup counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&district.server, "doorstep_backups_taken_total"), 0);
    assert!(district.server.healthy());
    for dir in &taken {
        std::fs::remove_dir(dir).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&district.server, "doorstep_backups_taken_total") < 1 {
        assert!(Instant::now() < deadline, "no backup once they could be written");
        std::thread::sleep(Duration::from_millis(100));
    }
    district.server.assert_sound();

    // A backup directory that cannot be one: the server does not start, and says why.
    std::fs::write(&config, "[backups]\ndir = \"/dev/null/backups\"\n").unwrap();
    district.server.kill();
    let refused = Server::try_start_with(&district.data, "127.0.0.1:0", &["--config", arg(&config)]).err().unwrap();
    assert!(refused.contains("cannot start the backups into /dev/null/backups"), "{refused}");
}
