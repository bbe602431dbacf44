//! Sync with the Doorstep server: `Replica.sync` (async) over the app's own HTTP stack,
//! its options and report, and `Replica.pending_changes`.
//!
//! The library links no HTTP client. The app hands `sync` an [`HttpTransport`], a foreign
//! trait with one `async` method that posts one request and returns the status and body
//! (Kotlin: `HttpURLConnection` or OkHttp; Swift: `URLSession`; Python: `http.client`).
//! The core's sync loop (`doorstep_core::sync_with`) builds each request, calls the
//! transport, and applies the answer; it pages until the server has nothing more. So
//! phones use the system's TLS, certificates and proxy settings, and the library stays
//! small (no reqwest, hyper, rustls).
//!
//! `sync` is an `async` method (Kotlin `suspend fun`, Swift `async`, Python `async def`).
//! Its work runs on the library's own thread, `doorstep-sync`, never on the caller's: the
//! future UniFFI hands to the foreign side only waits for a task spawned there. That thread
//! drives a small tokio runtime (current-thread scheduler and timer, no I/O driver), which
//! also enforces `timeout_seconds` on every request whatever the transport does. A Kotlin
//! caller on the main dispatcher does not block, and the SQLite transactions that apply
//! each response do not run on the UI thread. The transport's `post` is called from
//! that thread too; the generated Kotlin and Swift code runs it as a coroutine / `Task`,
//! Python on the event loop given to `uniffi_set_event_loop`.
//!
//! The core's sync takes the replica's lock only inside `sync_request` and
//! `apply_sync_response`, never across a network wait, so other threads read and write the
//! replica while a sync runs (the Kotlin and Python suites test this against a server
//! that holds the request open).
//!
//! Errors of the transport (thrown [`TransportError`]s, and any other exception, whose
//! text is kept) become `DoorstepError::Network`; nothing is lost.
//!
//! Cancelling the foreign call (Kotlin: cancelling the coroutine; Python: cancelling the
//! task) aborts the sync at its next network wait, and cancels the transport's call in
//! flight (UniFFI cancels the coroutine / task of a dropped foreign future). Each response
//! is applied in one transaction, so a cancelled sync has applied whole responses or
//! nothing of one; the next sync picks up where it stopped (the server deduplicates what
//! it had already taken).

use std::future::Future;
use std::panic::resume_unwind;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use doorstep_core as dc;

use crate::error::{DoorstepError, Result};
use crate::replica::Replica;

/// One HTTP header of an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// One sync request for the app's [`HttpTransport`] to post.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HttpRequest {
    /// `{server_url}/v1/sync`.
    pub url: String,
    /// Send these as they are: `Authorization: Bearer <device token>` and
    /// `Content-Type: application/x-doorstep-sync`.
    pub headers: Vec<HttpHeader>,
    /// The request body (binary, already compressed): send it as it is, `POST`.
    pub body: Vec<u8>,
    /// Give up after this many milliseconds (connecting and waiting for the answer), with
    /// `TransportError.Timeout`. `SyncOptions.timeout_seconds`; the library also stops
    /// waiting then.
    pub timeout_ms: u64,
}

/// The server's answer, whatever its status: the library reads 4xx and 5xx answers itself
/// (`DoorstepError.Server` with the server's text).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The whole response body.
    pub body: Vec<u8>,
}

/// Why a transport got no answer from the server. Every variant ends the sync with
/// `DoorstepError.Network` (nothing is lost); the texts become part of its message. Any
/// other exception a transport throws is treated as `Failed` with the exception's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TransportError {
    /// No answer within `timeout_ms`.
    #[error("timed out")]
    Timeout,
    /// The server could not be reached: offline, name not resolved, connection refused,
    /// TLS handshake failed. `reason` says which, e.g. the platform's exception text.
    #[error("no connection: {reason}")]
    NoConnection { reason: String },
    /// Anything else, e.g. the connection was cut while the answer arrived.
    #[error("{reason}")]
    Failed { reason: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for TransportError {
    /// An exception the transport threw that is not a `TransportError` (Kotlin: its
    /// `toString()`, Python: its `repr`).
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        TransportError::Failed { reason: e.reason }
    }
}

impl From<TransportError> for dc::TransportError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Timeout => dc::TransportError::Timeout,
            TransportError::NoConnection { reason } => dc::TransportError::NoConnection(reason),
            TransportError::Failed { reason } => dc::TransportError::Failed(reason),
        }
    }
}

/// The app's HTTP stack, as `sync` uses it: post one request, return the answer.
///
/// Implemented in Kotlin (`app.doorstep.HttpUrlConnectionTransport`, or one over OkHttp),
/// Swift (`URLSessionTransport`) or Python. `post` is `async` (Kotlin `suspend fun`, Swift
/// `async throws`, Python `async def`): do the blocking I/O off the caller (Kotlin:
/// `Dispatchers.IO`; Python: a thread), honour `request.timeout_ms`, and abort the request
/// when the call is cancelled (the library cancels it when a sync is cancelled or times
/// out). Return any status the server answered, errors included; throw `TransportError`
/// only when there is no answer.
#[uniffi::export(foreign)]
#[async_trait::async_trait]
pub trait HttpTransport: Send + Sync {
    async fn post(&self, request: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// The core's transport over the app's one, with the request's timeout enforced here.
struct ForeignTransport(Arc<dyn HttpTransport>);

impl dc::SyncTransport for ForeignTransport {
    async fn post(
        &self,
        request: dc::TransportRequest,
    ) -> std::result::Result<dc::TransportResponse, dc::TransportError> {
        let dc::TransportRequest {
            url,
            headers,
            body,
            timeout,
        } = request;
        let request = HttpRequest {
            url,
            headers: headers
                .into_iter()
                .map(|(name, value)| HttpHeader { name, value })
                .collect(),
            body,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        // Dropping the foreign call (timeout here, or a cancelled sync) cancels it on the
        // foreign side, which aborts the request.
        match tokio::time::timeout(timeout, self.0.post(request)).await {
            Err(_elapsed) => Err(dc::TransportError::Timeout),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(HttpResponse { status, body })) => Ok(dc::TransportResponse { status, body }),
        }
    }
}

/// The library's sync thread, `doorstep-sync`: a current-thread tokio runtime (with its
/// timer) that it drives forever, started on the first sync. Syncs of every replica run
/// there as tasks; they wait on the network concurrently, and apply responses one at a
/// time.
fn sync_runtime() -> &'static tokio::runtime::Handle {
    static HANDLE: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("the sync runtime starts");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("doorstep-sync".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("the sync thread starts");
        handle
    })
}

/// Options of a sync. Every field has a default: `SyncOptions()` in Kotlin.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncOptions {
    /// Give up a request to the server after this many seconds (connecting, sending the
    /// phone's changes and receiving the answer), with `DoorstepError.Network`. At least 1.
    #[uniffi(default = 60)]
    pub timeout_seconds: u32,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            timeout_seconds: 60,
        }
    }
}

impl TryFrom<SyncOptions> for dc::SyncOptions {
    type Error = DoorstepError;

    fn try_from(options: SyncOptions) -> Result<Self> {
        let SyncOptions { timeout_seconds } = options;
        if timeout_seconds == 0 {
            return Err(dc::Error::InvalidInput {
                reason: "timeout_seconds must be at least 1".into(),
                reason_zh: "超时秒数至少为 1".into(),
            }
            .into());
        }
        Ok(dc::SyncOptions {
            timeout: Duration::from_secs(timeout_seconds.into()),
            ..dc::SyncOptions::default()
        })
    }
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// HTTP requests made (1 for an ordinary sync; more for big pulls in pages).
    pub round_trips: u32,
    /// Local changes the server merged (and this phone no longer keeps as pending).
    pub accepted: u32,
    /// Local changes the server refused to merge; the phone keeps them, see
    /// `pending_changes()` for the reasons.
    pub quarantined: u32,
    /// Local changes an admin discarded on the server; their household was rebuilt from
    /// the server's copy.
    pub discarded: u32,
    /// Households whose records changed on this phone (new, or changed by others).
    pub households_changed: Vec<String>,
    /// Households that left this member's scope and were removed from the phone.
    pub households_removed: Vec<String>,
    /// Bytes on the wire (compressed request bodies).
    pub bytes_sent: u64,
    /// Bytes on the wire (compressed response bodies).
    pub bytes_received: u64,
}
mirror!(dc::SyncReport => SyncReport {
    round_trips, accepted, quarantined, discarded, households_changed, households_removed,
    bytes_sent, bytes_received,
});

/// A local change the server has not acknowledged yet. The phone keeps it until the
/// server merged it (or an admin discarded it).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PendingChange {
    /// The Automerge change hash (hex).
    pub change_hash: String,
    pub household_id: String,
    /// Set when the server quarantined the change: why (in the server's words). The change
    /// waits for an admin to release or discard it.
    pub quarantine_reason: Option<String>,
}
mirror!(dc::PendingChange => PendingChange { change_hash, household_id, quarantine_reason });

#[uniffi::export]
impl Replica {
    /// Local changes not yet acknowledged by the server, oldest first, with the reason of
    /// any the server quarantined. Empty once everything was delivered.
    pub fn pending_changes(&self) -> Result<Vec<PendingChange>> {
        Ok(self
            .core()
            .pending_changes()?
            .into_iter()
            .map(PendingChange::from)
            .collect())
    }
}

#[uniffi::export]
impl Replica {
    /// Sync with the server at `server_url` (e.g. `https://doorstep.example.org`) using the
    /// device token the phone received at enrolment, posting through the app's `transport`:
    /// hand over what was recorded here, receive what changed for this member's
    /// households. One round trip when there is little to exchange; big pulls come in
    /// pages, all within this call.
    ///
    /// Errors: `Network` (offline, timeout, connection cut, or the transport threw) and
    /// `Server` (the server refused, e.g. 401 for a wrong or revoked token) lose nothing:
    /// every local change stays pending until the server acknowledged it, and the next sync
    /// picks up where this one stopped. The replica stays usable from other threads during
    /// a sync.
    #[uniffi::method(default(options))]
    pub async fn sync(
        &self,
        server_url: String,
        device_token: String,
        transport: Arc<dyn HttpTransport>,
        options: SyncOptions,
    ) -> Result<SyncReport> {
        let options = dc::SyncOptions::try_from(options)?;
        let core = Arc::clone(self.core());
        let transport = ForeignTransport(transport);
        // Spawned, so that the work runs on the sync thread whatever thread polls this
        // future (UniFFI polls it from the foreign caller's thread).
        let task = AbortOnDrop(sync_runtime().spawn(async move {
            dc::sync_with(&core, &transport, &server_url, &device_token, &options).await
        }));
        match task.await {
            Ok(result) => Ok(result?.into()),
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            Err(_) => Err(dc::Error::Network {
                reason: "the sync was cancelled / 同步已取消".into(),
            }
            .into()),
        }
    }
}

/// A spawned task that is aborted when the future waiting for it is dropped (the foreign
/// caller cancelled), instead of running on detached.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort(); // no effect once the task has finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_are_the_core_defaults() {
        let core = dc::SyncOptions::try_from(SyncOptions::default()).unwrap();
        let defaults = dc::SyncOptions::default();
        assert_eq!(core.timeout, defaults.timeout);
        assert_eq!(core.page_bytes, defaults.page_bytes);
        let e = dc::SyncOptions::try_from(SyncOptions { timeout_seconds: 0 }).unwrap_err();
        assert!(
            matches!(e, DoorstepError::InvalidInput(ref m) if m.contains("timeout_seconds")),
            "{e}"
        );
    }

    const OFFLINE: &str = "无法连接同步服务器，数据已保存在本机，稍后会自动重试 / cannot reach the sync server, your data is kept on this phone: ";

    /// Fails every request, or never answers.
    enum TestTransport {
        Fails(TransportError),
        Hangs,
    }

    #[async_trait::async_trait]
    impl HttpTransport for TestTransport {
        async fn post(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
            assert!(request.url.ends_with("/v1/sync"), "{}", request.url);
            match self {
                TestTransport::Fails(e) => Err(e.clone()),
                TestTransport::Hangs => std::future::pending().await,
            }
        }
    }

    /// A replica with one local change waiting for the server.
    fn replica() -> (tempfile::TempDir, Arc<Replica>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite3").to_string_lossy().into_owned();
        let replica = Replica::open(path, "m-1".into(), "d-1".into()).unwrap();
        replica
            .create_household(crate::NewHousehold {
                family_name: "王".into(),
                address: "平洲路 1 号".into(),
                community_id: "c-1".into(),
                branch_id: "b-1".into(),
                guardians: vec![],
                students: vec![],
                assigned_members: vec!["m-1".into()],
                notes: String::new(),
            })
            .unwrap();
        (dir, replica)
    }

    /// Drives `future` as a foreign caller would: on this thread, while the work runs on
    /// the sync thread.
    fn wait<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn transport_failures_are_network_errors_with_their_text_and_lose_nothing() {
        let (_dir, replica) = replica();
        let pending = replica.pending_changes().unwrap();
        assert!(!pending.is_empty());
        let sync = |transport: TestTransport, timeout_seconds| {
            let options = SyncOptions { timeout_seconds };
            wait(replica.sync("http://h".into(), "t".into(), Arc::new(transport), options))
                .unwrap_err()
        };

        let reason = "java.io.IOException: unexpected end of stream";
        let e = sync(
            TestTransport::Fails(TransportError::Failed {
                reason: reason.into(),
            }),
            60,
        );
        assert_eq!(e, DoorstepError::Network(format!("{OFFLINE}{reason}")));
        let e = sync(
            TestTransport::Fails(TransportError::NoConnection {
                reason: "Connection refused".into(),
            }),
            60,
        );
        assert_eq!(
            e,
            DoorstepError::Network(format!(
                "{OFFLINE}no connection / 无网络连接: Connection refused"
            ))
        );
        let e = sync(TestTransport::Fails(TransportError::Timeout), 60);
        assert_eq!(
            e,
            DoorstepError::Network(format!("{OFFLINE}timed out / 超时"))
        );
        // An exception that is not a TransportError keeps its text.
        let thrown = TransportError::from(uniffi::UnexpectedUniFFICallbackError::new(
            "java.lang.IllegalStateException: boom",
        ));
        assert_eq!(
            thrown,
            TransportError::Failed {
                reason: "java.lang.IllegalStateException: boom".into()
            }
        );

        // A transport that never answers is stopped after timeout_seconds.
        let started = std::time::Instant::now();
        let e = sync(TestTransport::Hangs, 1);
        assert_eq!(
            e,
            DoorstepError::Network(format!("{OFFLINE}timed out / 超时"))
        );
        assert!(started.elapsed() < Duration::from_secs(10));

        assert_eq!(replica.pending_changes().unwrap(), pending, "nothing lost");
    }
}
