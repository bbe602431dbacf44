//! The HTTP side of a sync: post requests to the server until it has nothing more.
//!
//! Offline, timeouts and server errors end the sync with `Error::Network` or
//! `Error::Server` and lose nothing: the outbox and the position only change when a
//! response has been applied, so the next call picks up where this one stopped.

use std::time::Duration;

use super::protocol::{self, SyncResponse, CONTENT_TYPE, DEFAULT_PAGE_BYTES};
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
    pub timeout: Duration,
    pub page_bytes: u32,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions { timeout: Duration::from_secs(60), page_bytes: DEFAULT_PAGE_BYTES }
    }
}

fn network(e: reqwest::Error) -> Error {
    let reason = if e.is_timeout() {
        "timed out / 超时".to_string()
    } else if e.is_connect() {
        format!("no connection / 无网络连接: {e}")
    } else {
        e.to_string()
    };
    Error::Network { reason }
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
/// using the device's token.
pub async fn sync(replica: &Replica, server_url: &str, device_token: &str, options: &SyncOptions) -> Result<SyncReport> {
    let client = reqwest::Client::builder().timeout(options.timeout).build().map_err(network)?;
    let url = format!("{}/v1/sync", server_url.trim_end_matches('/'));
    let mut report = SyncReport::default();
    loop {
        let request = replica.sync_request(options.page_bytes)?;
        let body = protocol::encode(&request);
        report.bytes_sent += body.len() as u64;
        let response = client
            .post(&url)
            .bearer_auth(device_token)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(network)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(network)?;
        report.bytes_received += bytes.len() as u64;
        report.round_trips += 1;
        if !status.is_success() {
            return Err(Error::Server { status: status.as_u16(), message: server_message(&bytes) });
        }
        let response = SyncResponse::decode(&bytes, MAX_RESPONSE_BYTES)
            .map_err(|e| Error::Server { status: status.as_u16(), message: format!("unreadable response: {e}") })?;
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
mod tests {
    use super::server_message;

    #[test]
    fn error_answers_show_the_server_text_not_its_json() {
        let json = r#"{"error":"未登录或凭证无效 / missing, wrong or revoked token"}"#;
        assert_eq!(server_message(json.as_bytes()), "未登录或凭证无效 / missing, wrong or revoked token");
        assert_eq!(server_message(b"length limit exceeded\n"), "length limit exceeded");
        assert_eq!(server_message(br#"{"error":""}"#), r#"{"error":""}"#);
    }
}
