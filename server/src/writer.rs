//! The writer thread: owns the engine; async handlers send it work and await the answer.
//!
//! Sync requests waiting together are drained into one batch (one transaction, one
//! fsync): that is what lets a 2-core machine with SQLite accept thousands of changes a
//! second from many phones at once.

use std::sync::mpsc;

use doorstep_core::sync::protocol::SyncResponse;
use tokio::sync::oneshot;

use crate::engine::{Engine, SyncJob};
use crate::error::{Result, ServerError};
use crate::store::sqlite::SqliteStore;

/// Most sync requests handled in one transaction.
const MAX_BATCH: usize = 256;

type Work = Box<dyn FnOnce(&mut Engine<SqliteStore>) + Send>;

enum Command {
    Sync(SyncJob, oneshot::Sender<Result<SyncResponse>>),
    Run(Work),
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
}

impl Writer {
    pub fn start(mut engine: Engine<SqliteStore>) -> Writer {
        let (tx, rx) = mpsc::channel::<Command>();
        std::thread::Builder::new()
            .name("doorstep-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = Vec::new();
                    let mut replies = Vec::new();
                    let mut later = Vec::new();
                    let mut next = Some(first);
                    while let Some(command) = next.take() {
                        match command {
                            Command::Sync(job, reply) => {
                                jobs.push(job);
                                replies.push(reply);
                            }
                            Command::Run(work) => later.push(work),
                        }
                        if jobs.len() < MAX_BATCH {
                            next = rx.try_recv().ok();
                        }
                    }
                    if !jobs.is_empty() {
                        for (reply, result) in replies.into_iter().zip(engine.sync_batch(jobs)) {
                            let _ = reply.send(result);
                        }
                    }
                    for work in later {
                        work(&mut engine);
                    }
                }
            })
            .expect("the writer thread starts");
        Writer { tx }
    }

    pub async fn sync(&self, job: SyncJob) -> Result<SyncResponse> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Command::Sync(job, reply)).map_err(|_| ServerError::Internal("writer stopped".into()))?;
        answer.await.map_err(|_| ServerError::Internal("writer stopped".into()))?
    }

    /// Run `f` on the writer thread and return its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine<SqliteStore>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |engine| {
            let _ = reply.send(f(engine));
        });
        self.tx.send(Command::Run(work)).map_err(|_| ServerError::Internal("writer stopped".into()))?;
        answer.await.map_err(|_| ServerError::Internal("writer stopped".into()))?
    }
}
