//! Read-only connections to the store, each kept by a thread of its own, for the token
//! every request carries and for the read API. Requests queue for a fixed number of
//! threads. Before, each read went to tokio's blocking pool, which starts threads as
//! requests come: in the benchmark's burst of a thousand phones the server grew from 11
//! to 172 threads and opened 18 more connections, starting them while it merged.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::error::{Result, ServerError};

/// Threads reading for the read API and backups.
pub const READER_THREADS: usize = 8;
/// Threads looking up the member behind a request's token: a few microseconds each, kept
/// apart so that they never wait behind a coordinator's statistics.
pub const TOKEN_THREADS: usize = 4;

/// How long a read waits for the store to be free (a checkpoint) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request gets when its read panicked: the thread goes on with the next one.
const FAILED_INSIDE: &str = "服务器读取数据时内部出错，请重试 / the server failed inside while reading; retry the request";

type Job = Box<dyn FnOnce(Result<&Connection>) + Send>;

/// A handle to a set of reader threads; the threads end once it is dropped.
pub struct Readers {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
}

impl Readers {
    /// Start `threads` threads named `<name>-<i>` reading the store at `path`. Each opens
    /// its connection at its first read.
    pub fn start(path: PathBuf, threads: usize, name: &str) -> std::io::Result<Readers> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let (queue, path) = (queue.clone(), path.clone());
            std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                let mut conn: Option<Connection> = None;
                loop {
                    // One thread waits on the queue at a time; the others on the lock.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = next else { return };
                    let opened = match conn {
                        Some(ref c) => Ok(c),
                        None => open(&path).map(|c| &*conn.insert(c)),
                    };
                    // A panic drops the job's reply: its request gets an error, and the
                    // thread goes on.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(opened))).is_err() {
                        tracing::error!("a read panicked; the reader goes on");
                    }
                }
            })?;
        }
        Ok(Readers { path, jobs })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the next free reader thread, with its connection.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The request may have gone meanwhile: nobody to answer.
            let _ = reply.send(conn.and_then(f));
        });
        self.jobs.send(job).map_err(|_| ServerError::Internal(FAILED_INSIDE.into()))?;
        answer.await.map_err(|_| ServerError::Internal(FAILED_INSIDE.into()))?
    }
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}
