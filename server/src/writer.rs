//! The writer thread: owns the engine; async handlers send it work and await the answer.
//!
//! Sync requests waiting together are drained into one batch (one transaction, one
//! fsync): that is what lets a 2-core machine with SQLite accept thousands of changes a
//! second from many phones at once. The requests that arrive while a batch is handled
//! are started before it commits, so that they merge while it commits. Households those
//! batches left to compact are compacted once no request waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use doorstep_core::sync::protocol::SyncResponse;
use tokio::sync::oneshot;

use crate::engine::{Batch, Engine, SyncJob};
use crate::error::{Result, ServerError};
use crate::store::sqlite::SqliteStore;

/// Most sync requests handled in one transaction.
const MAX_BATCH: usize = 256;

/// Households compacted in one transaction while the writer is idle: a request arriving
/// meanwhile waits for at most this many (about 20 µs and one snapshot written each) and
/// one commit.
const COMPACTIONS_AT_ONCE: usize = 64;

type Work = Box<dyn FnOnce(&mut Engine<SqliteStore>) + Send>;

enum Command {
    Sync(SyncJob, oneshot::Sender<Result<SyncResponse>>),
    Run(Work),
}

/// What a request gets when its work panicked on the writer thread. The panic is caught
/// so that the writer goes on serving; the work's open transaction rolled back while
/// unwinding, and every request is safe to retry.
pub(crate) const FAILED_INSIDE: &str =
    "服务器处理该请求时内部出错，请重试 / the server failed inside while handling this request; retry it";

/// Run `f` on the writer thread, catching a panic (logged) so that the thread goes on.
pub(crate) fn survive<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| tracing::error!("{what} panicked; its transaction rolled back, the writer goes on"))
        .ok()
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
    /// How many households wait to be compacted (`/metrics`), as of the writer's last step.
    compactions_due: Arc<AtomicUsize>,
}

type Reply = oneshot::Sender<Result<SyncResponse>>;

/// Take the sync requests waiting, starting with `first`, up to a batch; work to run on
/// the writer goes to `later`.
fn drain(rx: &mpsc::Receiver<Command>, first: Option<Command>, later: &mut Vec<Work>) -> (Vec<SyncJob>, Vec<Reply>) {
    let (mut jobs, mut replies) = (Vec::new(), Vec::new());
    let mut next = first;
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
    (jobs, replies)
}

/// The next command, waiting for one; meanwhile, while none waits, compact what sync
/// batches left due (and what was found due at start), a few households at a time.
/// `None` once every handle is gone.
fn next_command(rx: &mpsc::Receiver<Command>, engine: &mut Engine<SqliteStore>, due: &AtomicUsize) -> Option<Command> {
    loop {
        let waiting = engine.compactions_due();
        due.store(waiting, Ordering::Relaxed);
        if waiting == 0 {
            return rx.recv().ok();
        }
        match rx.try_recv() {
            Ok(command) => return Some(command),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => {
                if let Some(Err(e)) = survive("a compaction", || engine.compact_due(COMPACTIONS_AT_ONCE)) {
                    tracing::warn!("compacting household documents failed; they stay as they are: {e}");
                }
            }
        }
    }
}

impl Writer {
    /// Start the writer thread. While one batch commits, the requests that arrived
    /// meanwhile are already merging (`Engine::sync_batch_then`); work to run on the writer
    /// (admin actions) waits for the batch under way and is not overtaken by later ones.
    pub fn start(mut engine: Engine<SqliteStore>) -> Writer {
        let (tx, rx) = mpsc::channel::<Command>();
        let compactions_due = Arc::new(AtomicUsize::new(0));
        let due = compactions_due.clone();
        std::thread::Builder::new()
            .name("doorstep-writer".into())
            .spawn(move || {
                let mut carried: Option<(Batch, Vec<Reply>)> = None;
                let mut later = Vec::new();
                loop {
                    let (batch, replies) = match carried.take() {
                        Some(carried) => carried,
                        None => {
                            let Some(first) = next_command(&rx, &mut engine, &due) else { break };
                            let (jobs, replies) = drain(&rx, Some(first), &mut later);
                            (Batch::new(jobs), replies)
                        }
                    };
                    if !batch.jobs.is_empty() {
                        let mut next_replies = Vec::new();
                        let next = || {
                            if !later.is_empty() {
                                return Vec::new();
                            }
                            let (jobs, replies) = drain(&rx, rx.try_recv().ok(), &mut later);
                            next_replies = replies;
                            jobs
                        };
                        match survive("a sync batch", || engine.sync_batch_then(batch, next)) {
                            Some((results, following)) => {
                                for (reply, result) in replies.into_iter().zip(results) {
                                    let _ = reply.send(result);
                                }
                                carried = following.map(|batch| (batch, next_replies));
                            }
                            None => {
                                for reply in replies.into_iter().chain(next_replies) {
                                    let _ = reply.send(Err(ServerError::Internal(FAILED_INSIDE.into())));
                                }
                            }
                        }
                    }
                    if carried.is_none() {
                        for work in later.drain(..) {
                            // A panicking work drops its reply: `run` answers FAILED_INSIDE.
                            survive("work on the writer", || work(&mut engine));
                        }
                    }
                }
            })
            .expect("the writer thread starts");
        Writer { tx, compactions_due }
    }

    /// Households left to compact (by sync batches, or found at start), waiting for the
    /// writer to be idle.
    pub fn compactions_due(&self) -> usize {
        self.compactions_due.load(Ordering::Relaxed)
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
        answer.await.map_err(|_| ServerError::Internal(FAILED_INSIDE.into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin;
    use crate::auth::hash_secret;
    use crate::merge::tests::{district, household, job, phone, record_visits};
    use crate::store::{Compaction, WriteTx};
    use doorstep_core::sync::protocol::{Outcome, SyncRequest};
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_panic_on_the_writer_fails_that_request_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::start(Engine::new(SqliteStore::open(dir.path()).unwrap()));
        let failed = writer.run(|_| -> Result<()> { panic!("test fault") }).await.unwrap_err();
        assert!(failed.to_string().contains("failed inside"), "{failed}");

        // The same writer goes on: an admin is created and syncs.
        let admin = writer.run(|engine| admin::create_admin(engine, "admin", "管理员")).await.unwrap();
        let request = SyncRequest::new(None, vec![]);
        let job = SyncJob { token_hash: hash_secret(&admin.token), request, changes: vec![] };
        let answer = writer.sync(job).await.unwrap();
        assert!(answer.acks.is_empty() && !answer.more);
    }

    #[tokio::test]
    async fn once_no_request_waits_the_writer_compacts_what_sync_batches_left() {
        let dir = tempfile::tempdir().unwrap();
        let (mut engine, _) = district(dir.path(), &["m1"]);
        let h1 = household(&mut engine, "甲", "m1");
        let (p1, first) = phone(&mut engine, "m1");
        let writer = Writer::start(engine);
        let mut position = first.position.clone();
        for change in record_visits(&p1, &first, |_| 2) {
            let answer = writer.sync(job(&p1.token, Some(position), vec![change])).await.unwrap();
            assert_eq!(answer.acks[0].outcome, Outcome::Accepted);
            position = answer.position;
        }
        // The second visit left h1 due; with nothing more to do, the writer compacts it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let h = h1.clone();
            let (due, left) = writer
                .run(move |engine| Ok((engine.write(|tx, _| tx.compaction_due(&h))?, engine.compactions_due())))
                .await
                .unwrap();
            if due == Compaction::NotDue && left == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "h1 still {due:?} 10 s after the last sync");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
