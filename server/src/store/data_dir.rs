//! The data directory as operators handle it: one process at a time on it (a lock file),
//! a consistent backup of the store while the server runs ([`back_up`], or
//! [`back_up_for_download`] for the admin API), and a backup put back in place with the
//! server stopped ([`restore`]), the files it replaces kept aside.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::sqlite::{server_meta, SqliteStore};
use crate::error::{Result, ServerError};

/// The store: one SQLite file in the data directory (with its `-wal` and `-shm` files).
pub const STORE_FILE: &str = "doorstep.sqlite3";
const LOCK_FILE: &str = "doorstep.lock";

/// Held by the process that has the store open (the server, or an admin command); a
/// second one on the same directory is refused. Two would each keep their own copy of
/// the households in memory and write over each other's merges. Released when dropped,
/// or by the system when the process dies, even killed.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn take(data_dir: &Path) -> Result<DataDirLock> {
        let path = data_dir.join(LOCK_FILE);
        let failed = |e: std::io::Error| ServerError::Internal(format!("cannot lock {}: {e}", path.display()));
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path).unwrap_or_default();
                let dir = data_dir.display();
                return Err(ServerError::Busy(format!(
                    "数据目录 {dir} 正被另一个进程（pid {pid}）使用；服务器运行时请使用 /v1/admin/ 接口，或先停止服务器 / \
                     {dir} is in use by another process (pid {pid}); while the server runs, use the JSON API under \
                     /v1/admin/, or stop the server first",
                    pid = pid.trim()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(failed(e)),
        }
        // Who holds it, for the message above.
        file.set_len(0).and_then(|()| write!(file, "{}", std::process::id())).map_err(failed)?;
        Ok(DataDirLock { _file: file })
    }
}

/// Write a backup of the store in `data_dir` to `to`, a file that must not exist yet; the
/// server may be running meanwhile. The copy is made in one read transaction (`VACUUM
/// INTO`), so it holds exactly what had committed when it began: every change
/// acknowledged by then, nothing half-written. It is written beside `to` and renamed once
/// complete and on disk, so `to` is never part of a backup. Returns its size in bytes.
pub fn back_up(data_dir: &Path, to: &Path) -> Result<u64> {
    let store = data_dir.join(STORE_FILE);
    if !store.is_file() {
        return Err(bad(format!("{} 中没有数据库 / there is no store in {}", data_dir.display(), data_dir.display())));
    }
    if to.exists() {
        return Err(bad(format!("{} 已存在，备份不会覆盖文件 / {} exists; a backup never replaces a file", to.display(), to.display())));
    }
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        return Err(bad(format!("目录 {} 不存在 / there is no directory {}", dir.display(), dir.display())));
    }
    let partial = beside(to, "partial");
    remove_if_there(&partial)?;
    let written = (|| {
        // Read and write, not create: a missing file is an error, and SQLite may need to
        // create the `-shm` file of a store no server has open.
        let conn = Connection::open_with_flags(&store, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        snapshot(&conn, &partial)?;
        put_in_place(&partial, to)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// A backup to send over the network (the admin API): made as [`back_up`] makes one, from
/// `conn` (read-only will do), in a file beside `store` that is unlinked at once, so that
/// nothing is left behind however the download ends. The file open for reading, and its
/// size.
pub fn back_up_for_download(conn: &Connection, store: &Path) -> Result<(File, u64)> {
    let partial = store.with_file_name(format!("backup-{}.partial", uuid::Uuid::new_v4().simple()));
    let opened = snapshot(conn, &partial).and_then(|()| {
        let file = File::open(&partial).map_err(|e| io(&partial, e))?;
        let bytes = file.metadata().map_err(|e| io(&partial, e))?.len();
        Ok((file, bytes))
    });
    remove_if_there(&partial)?;
    opened
}

/// Write what `conn`'s store holds to `into`, in one read transaction.
fn snapshot(conn: &Connection, into: &Path) -> Result<()> {
    epoch(conn)?;
    let path = into.to_str().ok_or_else(|| bad(format!("{} is not a UTF-8 path", into.display())))?;
    conn.execute("VACUUM INTO ?1", [path])?;
    Ok(())
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct Restored {
    pub bytes: u64,
    /// Where the store it replaced went, if there was one.
    pub replaced: Option<PathBuf>,
}

/// Put the backup `from` in place of the store in `data_dir`. Nothing may have the
/// directory open (the server stopped). The backup is checked on a copy first: a
/// Doorstep store whose every page reads back, of a schema this server opens (an older
/// one is upgraded as the server would). The store it replaces, with its `-wal` and
/// `-shm` files, is moved to `replaced-<UTC time>/` in the directory, never deleted. A
/// backup refused changes nothing.
pub fn restore(data_dir: &Path, from: &Path) -> Result<Restored> {
    std::fs::create_dir_all(data_dir).map_err(|e| io(data_dir, e))?;
    let _lock = DataDirLock::take(data_dir)?;
    let staging = data_dir.join("restoring");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| io(&staging, e))?;
    let checked = (|| {
        let copy = staging.join(STORE_FILE);
        std::fs::copy(from, &copy).map_err(|e| io(from, e))?;
        let refused = |e: &dyn std::fmt::Display| {
            bad(format!("{} 不是可用的户联系备份 / {} is not a Doorstep backup: {e}", from.display(), from.display()))
        };
        {
            let conn = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(|e| refused(&e))?;
            epoch(&conn).map_err(|e| refused(&e))?;
            let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| refused(&e))?;
            if check != "ok" {
                return Err(refused(&check));
            }
        }
        drop(SqliteStore::open(&staging).map_err(|e| refused(&e))?);
        Ok(copy)
    })();
    let copy = match checked {
        Ok(copy) => copy,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let store = data_dir.join(STORE_FILE);
    let mut replaced = None;
    if store.exists() {
        let aside = data_dir.join(format!("replaced-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")));
        std::fs::create_dir(&aside).map_err(|e| io(&aside, e))?;
        for suffix in ["", "-wal", "-shm"] {
            let file = data_dir.join(format!("{STORE_FILE}{suffix}"));
            if file.exists() {
                std::fs::rename(&file, aside.join(format!("{STORE_FILE}{suffix}"))).map_err(|e| io(&file, e))?;
            }
        }
        replaced = Some(aside);
    }
    let bytes = put_in_place(&copy, &store)?;
    std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
    Ok(Restored { bytes, replaced })
}

/// The store's epoch, which only a Doorstep store has.
fn epoch(conn: &Connection) -> Result<String> {
    server_meta(conn, "epoch")?.ok_or_else(|| bad("它不是户联系服务器的数据库 / it is not a Doorstep server store".into()))
}

/// Sync `from` to disk, rename it to `to`, and sync the directory; returns its size.
fn put_in_place(from: &Path, to: &Path) -> Result<u64> {
    let file = File::open(from).map_err(|e| io(from, e))?;
    file.sync_all().map_err(|e| io(from, e))?;
    let bytes = file.metadata().map_err(|e| io(from, e))?.len();
    std::fs::rename(from, to).map_err(|e| io(to, e))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
    }
    Ok(bytes)
}

/// `file` with `.suffix` added to its name.
fn beside(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    file.with_file_name(name)
}

fn remove_if_there(file: &Path) -> Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(file, e)),
        _ => Ok(()),
    }
}

fn bad(message: String) -> ServerError {
    ServerError::BadRequest(message)
}

fn io(path: &Path, e: std::io::Error) -> ServerError {
    ServerError::Internal(format!("{}: {e}", path.display()))
}
