//! The reqwest transport and [`sync`], which runs the sync loop over it (feature
//! `http-client`, on by default).
//!
//! The server's tests and benchmarks sync through this. The mobile bindings turn the
//! feature off: phones post through their own HTTP stack (see [`super::client`]), and the
//! phone library links no reqwest, hyper or rustls.

use super::client::{sync_with, SyncOptions, SyncReport, SyncTransport, TransportError, TransportRequest, TransportResponse};
use crate::error::Result;
use crate::replica::Replica;

/// A [`SyncTransport`] over a reqwest client (rustls, HTTP/2; one client keeps its
/// connections open across the requests of a sync).
#[derive(Debug, Clone, Default)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestTransport { client }
    }
}

fn transport_error(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_connect() {
        TransportError::NoConnection(e.to_string())
    } else {
        TransportError::Failed(e.to_string())
    }
}

impl SyncTransport for ReqwestTransport {
    async fn post(&self, request: TransportRequest) -> Result<TransportResponse, TransportError> {
        let mut builder = self.client.post(&request.url).timeout(request.timeout).body(request.body);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport_error)?;
        Ok(TransportResponse { status, body: body.into() })
    }
}

/// Sync `replica` with the server at `server_url` (e.g. `https://doorstep.example.org`)
/// using the device's token, over a new reqwest client.
pub async fn sync(replica: &Replica, server_url: &str, device_token: &str, options: &SyncOptions) -> Result<SyncReport> {
    let client = reqwest::Client::builder()
        .timeout(options.timeout)
        .build()
        .map_err(|e| crate::Error::from(transport_error(e)))?;
    sync_with(replica, &ReqwestTransport::new(client), server_url, device_token, options).await
}
