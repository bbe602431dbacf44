//! Readers of the store (`store::read::ReadStore`: a read-only connection each), each kept
//! by a thread of its own, for the token every request carries and for the read API. Requests queue for a fixed number of
//! threads. Before, each read went to tokio's blocking pool, which starts threads as
//! requests come: in the benchmark's burst of a thousand phones the server grew from 11
//! to 172 threads and opened 18 more connections, starting them while it merged.

use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::{Result, ServerError};
use crate::store::read::ReadStore;

/// Threads reading for the read API and backups.
pub const READER_THREADS: usize = 8;
/// Threads looking up the member behind a request's token: a few microseconds each, kept
/// apart so that they never wait behind a coordinator's statistics.
pub const TOKEN_THREADS: usize = 4;

/// What a request gets when its read panicked: the thread goes on with the next one.
const FAILED_INSIDE: &str = "服务器读取数据时内部出错，请重试 / the server failed inside while reading; retry the request";

type Job<R> = Box<dyn FnOnce(Result<&R>) + Send>;

/// A handle to a set of reader threads; the threads end once it is dropped.
pub struct Readers<R> {
    jobs: mpsc::Sender<Job<R>>,
}

impl<R: ReadStore> Readers<R> {
    /// Start `threads` threads named `<name>-<i>`, each with a reader `open` gives it at
    /// its first read.
    pub fn start(open: impl Fn() -> Result<R> + Send + Sync + 'static, threads: usize, name: &str) -> std::io::Result<Readers<R>> {
        let (jobs, queue) = mpsc::channel::<Job<R>>();
        let queue = Arc::new(Mutex::new(queue));
        let open = Arc::new(open);
        for i in 0..threads.max(1) {
            let (queue, open) = (queue.clone(), open.clone());
            std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                let mut reader: Option<R> = None;
                loop {
                    // One thread waits on the queue at a time; the others on the lock.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = next else { return };
                    let opened = match reader {
                        Some(ref r) => Ok(r),
                        None => open().map(|r| &*reader.insert(r)),
                    };
                    // A panic drops the job's reply: its request gets an error, and the
                    // thread goes on.
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(opened))).is_err() {
                        tracing::error!("a read panicked; the reader goes on");
                    }
                }
            })?;
        }
        Ok(Readers { jobs })
    }

    /// Run `f` on the next free reader thread, with its reader.
    pub async fn read<T: Send + 'static>(&self, f: impl FnOnce(&R) -> Result<T> + Send + 'static) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job<R> = Box::new(move |reader| {
            // The request may have gone meanwhile: nobody to answer.
            let _ = reply.send(reader.and_then(f));
        });
        self.jobs.send(job).map_err(|_| ServerError::Internal(FAILED_INSIDE.into()))?;
        answer.await.map_err(|_| ServerError::Internal(FAILED_INSIDE.into()))?
    }
}
