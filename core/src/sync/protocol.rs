//! The sync protocol's messages (version 1), shared by the phone and the server.
//!
//! On the wire a message is `zstd(postcard(message))`, posted to `/v1/sync` with a bearer
//! device token. See `docs/protocol.md` for the exchange, paging, acknowledgements,
//! quarantine and reconciliation.

use serde::{Deserialize, Serialize};

/// The protocol version this code speaks; a message with another version is refused.
pub const PROTOCOL_VERSION: u16 = 2;

/// The content type of sync requests and responses.
pub const CONTENT_TYPE: &str = "application/x-doorstep-sync";

/// Largest response a phone asks for by default (one page).
pub const DEFAULT_PAGE_BYTES: u32 = 4 * 1024 * 1024;

/// Most bytes of local changes a phone pushes in one request by default (before
/// compression; at least one change goes in every request).
pub const DEFAULT_PUSH_BYTES: u32 = 2 * 1024 * 1024;

/// Where a device stands: the server's store and change log as the device last saw them
/// (`epoch`, opaque to the device), the last change-log entry the device has (`seq`), and
/// the last scope grant it confirmed (`grant`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: String,
    pub seq: u64,
    pub grant: u64,
}

/// One change a device made and the server has not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedChange {
    pub household_id: String,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// A device's heads for one household, sent for a full reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heads {
    pub household_id: String,
    pub heads: Vec<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub version: u16,
    /// `None` on a device's first sync.
    pub position: Option<Position>,
    /// Unacknowledged local changes, oldest first.
    pub changes: Vec<PushedChange>,
    /// Set when the server asked for a reconciliation: every household's heads.
    pub reconcile: Option<Vec<Heads>>,
    /// Households the device needs whole again (after a change was discarded).
    pub rebuild: Vec<String>,
    /// The largest response the device wants in one page.
    pub max_response_bytes: u32,
    /// The device holds more unacknowledged changes than this request carries (they come
    /// in the next requests of the same sync). The server then removes no household from
    /// the device yet: a reassigned household leaves the phone only once all its changes
    /// were taken.
    pub more_to_push: bool,
}

/// What the server did with one pushed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Merged (or already merged before).
    Accepted,
    /// Kept aside with a reason, not merged; an admin may release or discard it.
    Quarantined { reason: String },
    /// An admin discarded it: the device should rebuild the household from the server.
    Discarded { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub hash: [u8; 32],
    pub outcome: Outcome,
}

/// Changes of one household, or a whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdData {
    pub household_id: String,
    /// Encoded Automerge changes, or a saved document when `whole` is set.
    pub chunks: Vec<serde_bytes::ByteBuf>,
    pub whole: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub version: u16,
    /// One entry per pushed change, and for earlier pushes whose outcome changed.
    pub acks: Vec<Ack>,
    /// Changes since the device's position, and whole documents for households newly in
    /// scope (or asked for in `rebuild`).
    pub data: Vec<HouseholdData>,
    /// Households that left the device's scope: remove them once nothing is pending.
    pub removed: Vec<String>,
    /// Where the device stands after applying this response.
    pub position: Position,
    /// More pages follow: sync again right away.
    pub more: bool,
    /// The server did not recognise the position: send `reconcile` next.
    pub reconcile_needed: bool,
    /// During a reconciliation: the server's heads where the device's differ, so the
    /// device can push what the server lacks.
    pub server_heads: Vec<Heads>,
}

/// Errors of decoding a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not zstd-compressed: {0}")]
    Compression(String),
    #[error("malformed message: {0}")]
    Format(String),
    #[error("protocol version {0} is not supported (this side speaks {PROTOCOL_VERSION})")]
    Version(u16),
}

/// zstd level of what phones send: zstd's default, light on the battery.
pub const REQUEST_ZSTD_LEVEL: i32 = 3;

/// zstd level of what the server answers. A coordinator's first sync is megabytes read
/// once over mobile data: level 6 makes it about 13% smaller than level 3, for about 6 ms
/// more server CPU per uncompressed megabyte (`docs/sync-benchmark.md`); reading is as
/// fast at every level.
pub const RESPONSE_ZSTD_LEVEL: i32 = 6;

/// Encode a message for the wire, compressed at `REQUEST_ZSTD_LEVEL`.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    encode_at(message, REQUEST_ZSTD_LEVEL)
}

fn encode_at<T: Serialize>(message: &T, level: i32) -> Vec<u8> {
    let raw = postcard::to_allocvec(message).expect("protocol messages serialise");
    zstd::bulk::compress(&raw, level).expect("zstd compresses in memory")
}

/// Decode a message, refusing more than `limit` bytes once decompressed.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    let raw = zstd::bulk::decompress(bytes, limit).map_err(|e| DecodeError::Compression(e.to_string()))?;
    postcard::from_bytes(&raw).map_err(|e| DecodeError::Format(e.to_string()))
}

impl SyncRequest {
    /// An ordinary request: `changes` pushed from `position`, answered in pages of the
    /// default size, with no reconciliation and nothing to rebuild.
    pub fn new(position: Option<Position>, changes: Vec<PushedChange>) -> SyncRequest {
        SyncRequest {
            version: PROTOCOL_VERSION,
            position,
            changes,
            reconcile: None,
            rebuild: Vec::new(),
            max_response_bytes: DEFAULT_PAGE_BYTES,
            more_to_push: false,
        }
    }

    pub fn decode(bytes: &[u8], limit: usize) -> Result<SyncRequest, DecodeError> {
        let request: SyncRequest = decode(bytes, limit)?;
        if request.version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(request.version));
        }
        Ok(request)
    }
}

impl SyncResponse {
    /// Encode the server's answer, compressed at `RESPONSE_ZSTD_LEVEL`.
    pub fn encode(&self) -> Vec<u8> {
        encode_at(self, RESPONSE_ZSTD_LEVEL)
    }

    pub fn decode(bytes: &[u8], limit: usize) -> Result<SyncResponse, DecodeError> {
        let response: SyncResponse = decode(bytes, limit)?;
        if response.version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(response.version));
        }
        Ok(response)
    }
}
