//! Backups the server takes on its own, on a schedule (`[backups]` in the config file).
//!
//! A thread of its own writes one backup every `every_seconds` into the backup directory
//! (`data_dir::back_up`: one consistent snapshot, made while phones sync, written beside
//! its name and renamed once complete), named by its UTC time
//! (`doorstep-20261201T083000Z.sqlite3`), then deletes the oldest beyond `keep`, and
//! what a backup cut short by a crash left behind. The schedule follows the newest backup
//! in the directory, so a server restarted often still backs up on time, and not more
//! often. A failed backup is logged and counted in `/metrics`, and tried again at the
//! next one; the server goes on.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::config::Backups;
use crate::metrics::BackupMetrics;
use crate::store::data_dir;

const PREFIX: &str = "doorstep-";
const SUFFIX: &str = ".sqlite3";
const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The running schedule. Dropping it stops the thread, after the backup under way if any.
pub struct Schedule {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Schedule {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Start taking backups of the store in `data_dir` as `plan` says.
pub fn start(data_dir: PathBuf, plan: Backups, metrics: BackupMetrics) -> std::io::Result<Schedule> {
    std::fs::create_dir_all(&plan.dir)?;
    let (stop, stopped) = channel::<()>();
    let thread = std::thread::Builder::new().name("doorstep-backups".into()).spawn(move || {
        // At most a year (the config file says so).
        let every = chrono::Duration::seconds(plan.every_seconds.min(Backups::A_YEAR) as i64);
        loop {
            let next = match newest(&plan.dir) {
                Some(newest) => newest.checked_add_signed(every).unwrap_or(DateTime::<Utc>::MAX_UTC),
                None => Utc::now(),
            };
            metrics.next_at.set(next.timestamp());
            if stopped_within(&stopped, (next - Utc::now()).to_std().unwrap_or(Duration::ZERO)) {
                return;
            }
            let at = Utc::now();
            match take(&data_dir, &plan, at) {
                Ok((file, bytes)) => {
                    metrics.taken.inc();
                    metrics.last_at.set(at.timestamp());
                    tracing::info!(file = %file.display(), bytes, "backup written");
                }
                Err(e) => {
                    metrics.failed.inc();
                    tracing::error!(dir = %plan.dir.display(), error = %e, "backup failed; tried again at the next one");
                    // Not at once again: the newest backup is still the old one.
                    if stopped_within(&stopped, Duration::from_secs(plan.every_seconds)) {
                        return;
                    }
                }
            }
        }
    })?;
    Ok(Schedule { stop: Some(stop), thread: Some(thread) })
}

/// Wait `wait`, or less if the schedule is dropped meanwhile: whether it was.
fn stopped_within(stopped: &Receiver<()>, wait: Duration) -> bool {
    !matches!(stopped.recv_timeout(wait), Err(RecvTimeoutError::Timeout))
}

/// One backup at `at`, then the oldest beyond `keep` and leftovers deleted. The new file
/// and its size.
fn take(data_dir: &Path, plan: &Backups, at: DateTime<Utc>) -> Result<(PathBuf, u64), String> {
    let file = plan.dir.join(format!("{PREFIX}{}{SUFFIX}", at.format(TIME_FORMAT)));
    let bytes = data_dir::back_up(data_dir, &file).map_err(|e| e.to_string())?;
    let mut backups = listed(&plan.dir);
    backups.sort();
    let surplus = backups.len().saturating_sub(plan.keep);
    for (_, old) in &backups[..surplus] {
        remove(old);
    }
    // A backup cut short (the server killed while writing it) left its partial file.
    for entry in std::fs::read_dir(&plan.dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX) && name.ends_with(&format!("{SUFFIX}.partial")) {
            remove(&entry.path());
        }
    }
    Ok((file, bytes))
}

fn remove(file: &Path) {
    if let Err(e) = std::fs::remove_file(file) {
        tracing::warn!(file = %file.display(), error = %e, "cannot delete an old backup");
    }
}

/// The backups in `dir` this schedule wrote, with their times. Other files are left alone.
fn listed(dir: &Path) -> Vec<(DateTime<Utc>, PathBuf)> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let time = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
            let at = NaiveDateTime::parse_from_str(time, TIME_FORMAT).ok()?.and_utc();
            Some((at, entry.path()))
        })
        .collect()
}

fn newest(dir: &Path) -> Option<DateTime<Utc>> {
    listed(dir).into_iter().map(|(at, _)| at).max()
}
