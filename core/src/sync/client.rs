//! The sync loop: post requests to the server until it has nothing more, over any
//! [`SyncTransport`].
//!
//! The loop knows the protocol and no HTTP library: it builds each request from the
//! replica, encodes it, hands the bytes to the transport (which posts them to
//! `{server}/v1/sync` and returns the status and the body), decodes the answer and applies
//! it. The transport is whatever the caller has: reqwest in `sync::http_client` (feature
//! `http-client`, on by default: the server, its tests and benchmarks), or the phone's own
//! HTTP stack behind a foreign trait in the mobile bindings (OkHttp or
//! `HttpURLConnection`, `URLSession`), which keeps an HTTP client and a TLS stack out of
//! the phone library.
//!
//! Offline, timeouts and server errors end the sync with `Error::Network` or
//! `Error::Server` and lose nothing: the outbox and the position only change when a
//! response has been applied, so the next call picks up where this one stopped.

use std::future::Future;
use std::time::Duration;

use super::protocol::{self, SyncResponse, CONTENT_TYPE, DEFAULT_PAGE_BYTES, DEFAULT_PUSH_BYTES};
use super::SyncStep;
use crate::error::{Error, Result};
use crate::replica::Replica;

/// How many requests one sync may make before it stops (a safety bound, far above a
/// coordinator's first sync).
const MAX_ROUND_TRIPS: u32 = 10_000;

/// Largest response accepted once decompressed.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// What a whole sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub round_trips: u32,
    pub accepted: u32,
    pub quarantined: u32,
    pub discarded: u32,
    pub households_changed: Vec<String>,
    pub households_removed: Vec<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Options of a sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Give up one request after this long (connecting, sending, receiving). Passed to the
    /// transport in every [`TransportRequest`].
    pub timeout: Duration,
    /// The largest response page to ask the server for.
    pub page_bytes: u32,
    /// Most bytes of local changes to push per request (a slow link may want less); more
    /// go in the next requests of the same sync.
    pub push_bytes: u32,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions { timeout: Duration::from_secs(60), page_bytes: DEFAULT_PAGE_BYTES, push_bytes: DEFAULT_PUSH_BYTES }
    }
}

/// One sync request for a transport to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportRequest {
    /// `{server_url}/v1/sync`.
    pub url: String,
    /// Headers to send as they are: `Authorization: Bearer <device token>` and
    /// `Content-Type: ` [`CONTENT_TYPE`].
    pub headers: Vec<(String, String)>,
    /// The encoded request (zstd-compressed postcard).
    pub body: Vec<u8>,
    /// Give up after this long, connecting and waiting for the answer included, with
    /// [`TransportError::Timeout`].
    pub timeout: Duration,
}

/// The server's answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportResponse {
    /// The HTTP status code (any: the loop reads non-2xx answers as `Error::Server`).
    pub status: u16,
    /// The whole response body.
    pub body: Vec<u8>,
}

/// Why a transport got no answer. The loop turns every one into `Error::Network`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// No answer within the request's timeout.
    Timeout,
    /// The server could not be reached: offline, name not resolved, connection refused,
    /// TLS handshake failed. The text says which.
    NoConnection(String),
    /// Anything else: the connection was cut mid-way, the answer was not HTTP...
    Failed(String),
}

impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        let reason = match e {
            TransportError::Timeout => "timed out / 超时".to_string(),
            TransportError::NoConnection(detail) => format!("no connection / 无网络连接: {detail}"),
            TransportError::Failed(detail) => detail,
        };
        Error::Network { reason }
    }
}

/// Posts one sync request to the server and returns its answer: the one thing the sync
/// loop needs from an HTTP stack.
///
/// The future must be `Send`, so that a sync can run on a thread other than the one that
/// started it. Dropping it (a cancelled sync) should abort the request.
pub trait SyncTransport {
    fn post(&self, request: TransportRequest) -> impl Future<Output = Result<TransportResponse, TransportError>> + Send;
}

/// The text of an error answer: the server sends `{"error": "<bilingual text>"}`; anything
/// else (a proxy's page, plain text) is shown as it is.
fn server_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.get("error")?.as_str().map(|t| t.trim().to_string()))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// Sync `replica` with the server at `server_url` (e.g. `https://doorstep.example.org`)
/// using the device's token, posting each request through `transport`.
///
/// The replica's lock is taken only while a request is built and while a response is
/// applied (one SQLite transaction each), never while the transport waits, so other
/// threads use the replica meanwhile. Another sync of the same replica waits until this
/// one has finished (or was dropped).
pub async fn sync_with<T: SyncTransport + ?Sized>(
    replica: &Replica,
    transport: &T,
    server_url: &str,
    device_token: &str,
    options: &SyncOptions,
) -> Result<SyncReport> {
    let url = format!("{}/v1/sync", server_url.trim_end_matches('/'));
    let headers = vec![
        ("Authorization".to_string(), format!("Bearer {device_token}")),
        ("Content-Type".to_string(), CONTENT_TYPE.to_string()),
    ];
    // One sync of a replica at a time: a second one (a pull-to-refresh during a background
    // sync) starts once the first has finished, from where it left off.
    let _one_at_a_time = replica.syncing.lock().await;
    let mut report = SyncReport::default();
    loop {
        let request = replica.sync_request(options.page_bytes, options.push_bytes)?;
        let body = protocol::encode(&request);
        report.bytes_sent += body.len() as u64;
        let response = transport
            .post(TransportRequest { url: url.clone(), headers: headers.clone(), body, timeout: options.timeout })
            .await?;
        let (status, bytes) = (response.status, response.body);
        report.bytes_received += bytes.len() as u64;
        report.round_trips += 1;
        if !(200..300).contains(&status) {
            return Err(Error::Server { status, message: server_message(&bytes) });
        }
        let response = SyncResponse::decode(&bytes, MAX_RESPONSE_BYTES)
            .map_err(|e| Error::Server { status, message: format!("unreadable response: {e}") })?;
        let step: SyncStep = replica.apply_sync_response(response)?;
        report.accepted += step.accepted;
        report.quarantined += step.quarantined;
        report.discarded += step.discarded;
        report.households_changed.extend(step.households_changed);
        report.households_removed.extend(step.households_removed);
        if !step.again || report.round_trips >= MAX_ROUND_TRIPS {
            report.households_changed.sort();
            report.households_changed.dedup();
            return Ok(report);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::NewHousehold;

    #[test]
    fn error_answers_show_the_server_text_not_its_json() {
        let json = r#"{"error":"未登录或凭证无效 / missing, wrong or revoked token"}"#;
        assert_eq!(server_message(json.as_bytes()), "未登录或凭证无效 / missing, wrong or revoked token");
        assert_eq!(server_message(b"length limit exceeded\n"), "length limit exceeded");
        assert_eq!(server_message(br#"{"error":""}"#), r#"{"error":""}"#);
    }

    /// Answers every request with one canned result and keeps what it was sent.
    struct Canned {
        answer: Result<TransportResponse, TransportError>,
        sent: Mutex<Vec<TransportRequest>>,
    }

    impl SyncTransport for Canned {
        async fn post(&self, request: TransportRequest) -> Result<TransportResponse, TransportError> {
            self.sent.lock().unwrap().push(request);
            self.answer.clone()
        }
    }

    /// Polls a future that never waits (the canned transport answers at once).
    fn ready<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("the canned transport never waits"),
        }
    }

    /// A member's replica (`r.sqlite3` in the directory) with one household it created.
    pub(in crate::sync) fn replica_with_a_change() -> (tempfile::TempDir, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path().join("r.sqlite3"), "m-1", "d-1").unwrap();
        replica
            .create_household(&NewHousehold {
                family_name: "王".into(),
                address: "平洲路 1 号".into(),
                community_id: "c-1".into(),
                branch_id: "b-1".into(),
                assigned_members: vec!["m-1".into()],
                ..NewHousehold::default()
            })
            .unwrap();
        assert!(!replica.pending_changes().unwrap().is_empty());
        (dir, replica)
    }

    #[test]
    fn the_loop_sends_the_url_token_and_content_type_and_maps_failures_without_loss() {
        let (_dir, replica) = replica_with_a_change();
        let pending = replica.pending_changes().unwrap();
        let options = SyncOptions { timeout: Duration::from_secs(7), ..SyncOptions::default() };

        let offline = Canned { answer: Err(TransportError::NoConnection("refused".into())), sent: Mutex::default() };
        let e = ready(sync_with(&replica, &offline, "http://127.0.0.1:9/", "tok", &options)).unwrap_err();
        assert_eq!(e, Error::Network { reason: "no connection / 无网络连接: refused".into() });
        let sent = offline.sent.into_inner().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].url, "http://127.0.0.1:9/v1/sync");
        assert_eq!(
            sent[0].headers,
            vec![
                ("Authorization".to_string(), "Bearer tok".to_string()),
                ("Content-Type".to_string(), CONTENT_TYPE.to_string()),
            ]
        );
        assert_eq!(sent[0].timeout, Duration::from_secs(7));
        assert!(!sent[0].body.is_empty());
        assert_eq!(replica.pending_changes().unwrap(), pending, "nothing lost");

        let slow = Canned { answer: Err(TransportError::Timeout), sent: Mutex::default() };
        let e = ready(sync_with(&replica, &slow, "http://x", "tok", &options)).unwrap_err();
        assert_eq!(e.to_string(), "无法连接同步服务器，数据已保存在本机，稍后会自动重试 / cannot reach the sync server, your data is kept on this phone: timed out / 超时");

        let refused = Canned {
            answer: Ok(TransportResponse { status: 401, body: br#"{"error":"wrong token"}"#.to_vec() }),
            sent: Mutex::default(),
        };
        let e = ready(sync_with(&replica, &refused, "http://x", "tok", &options)).unwrap_err();
        assert_eq!(e, Error::Server { status: 401, message: "wrong token".into() });

        let garbage = Canned { answer: Ok(TransportResponse { status: 200, body: b"<html>".to_vec() }), sent: Mutex::default() };
        let e = ready(sync_with(&replica, &garbage, "http://x", "tok", &options)).unwrap_err();
        assert!(matches!(e, Error::Server { status: 200, ref message } if message.starts_with("unreadable response")), "{e}");
        assert_eq!(replica.pending_changes().unwrap(), pending, "nothing lost");
    }
}
