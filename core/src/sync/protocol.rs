//! The sync protocol's messages (version 1), shared by the phone and the server.
//!
//! On the wire a message is `zstd(postcard(message))`, posted to `/v1/sync` with a bearer
//! device token. See `docs/protocol.md` for the exchange, paging, acknowledgements,
//! quarantine and reconciliation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::document::shipped;
use crate::model::Role;

/// The protocol version this code speaks. Phones speak it alone; the server also answers
/// phones on versions back to `OLDEST_VERSION`, in their version.
pub const PROTOCOL_VERSION: u16 = 4;

/// The oldest version the server answers: phones on version 3 (whose answers carry no
/// `role`) keep syncing while their members update the app.
pub const OLDEST_VERSION: u16 = 3;

/// The content type of sync requests and responses.
pub const CONTENT_TYPE: &str = "application/x-doorstep-sync";

/// Largest response a phone asks for by default (one page).
pub const DEFAULT_PAGE_BYTES: u32 = 4 * 1024 * 1024;

/// Most bytes of local changes a phone pushes in one request by default (before
/// compression; at least one change goes in every request).
pub const DEFAULT_PUSH_BYTES: u32 = 2 * 1024 * 1024;

/// Most operations the changes of one request may claim together (each change claims
/// at most `document::MAX_CHANGE_OPERATIONS`). Decoding costs about 0.1 µs per claimed
/// operation, whatever the bytes: a few bytes can claim thousands. A phone's request
/// stops before this (`outbox_batch`); the server refuses one beyond it.
pub const MAX_REQUEST_OPERATIONS: u64 = 2_000_000;

/// Longest household id a request may name (ids are UUIDs, 36 characters).
pub const MAX_HOUSEHOLD_ID_BYTES: usize = 64;

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

/// Changes of one household.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdData {
    pub household_id: String,
    /// Encoded Automerge changes.
    pub chunks: Vec<serde_bytes::ByteBuf>,
}

/// Whole documents, for households newly in the device's scope or asked for in `rebuild`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholeDocuments {
    pub household_ids: Vec<String>,
    /// The documents, in the same order, without their chunk headers and heads, in one
    /// bundle laid out by column (`doorstep_core::document::shipped`).
    pub bundle: serde_bytes::ByteBuf,
    /// `heads_digest` of the documents' heads, which they come without. The phone
    /// computes the heads as it loads the documents, and checks.
    pub heads_digest: [u8; 32],
}

impl WholeDocuments {
    /// Each household and its document as `HouseholdDocument::load_from_sync` reads it.
    pub fn documents(&self) -> Result<Vec<(&str, Vec<u8>)>, String> {
        let documents = shipped::unbundle(&self.bundle)?;
        if documents.len() != self.household_ids.len() {
            return Err(format!("{} documents for {} households", documents.len(), self.household_ids.len()));
        }
        Ok(self.household_ids.iter().map(String::as_str).zip(documents).collect())
    }
}

/// A `SyncResponse` as version 3 lays it out: the same fields, in the same order, without
/// `role` (postcard writes a struct as its fields one after another).
#[derive(Serialize)]
struct Version3<'a> {
    version: u16,
    acks: &'a [Ack],
    data: &'a [HouseholdData],
    whole: &'a Option<WholeDocuments>,
    removed: &'a [String],
    position: &'a Position,
    more: bool,
    reconcile_needed: bool,
    server_heads: &'a [Heads],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub version: u16,
    /// One entry per pushed change, and for earlier pushes whose outcome changed.
    pub acks: Vec<Ack>,
    /// Changes since the device's position.
    pub data: Vec<HouseholdData>,
    /// Whole documents: applied before `data`.
    pub whole: Option<WholeDocuments>,
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
    /// The device's member's role now: a member's phone checks its own edits by the
    /// member's rules (`document::rules`) before keeping them.
    pub role: Role,
}

/// SHA-256 over the heads of each whole document of a response, in order: the number of
/// heads as 8 bytes (little-endian), then the heads, sorted.
pub fn heads_digest<'a>(heads: impl IntoIterator<Item = &'a [automerge::ChangeHash]>) -> [u8; 32] {
    let mut digest = Sha256::new();
    for heads in heads {
        let mut sorted = heads.to_vec();
        sorted.sort();
        digest.update((sorted.len() as u64).to_le_bytes());
        for head in sorted {
            digest.update(head.0);
        }
    }
    digest.finalize().into()
}

/// Errors of decoding a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not zstd-compressed: {0}")]
    Compression(String),
    #[error("{size} bytes once decompressed, over the limit of {limit}")]
    TooLarge { size: u64, limit: usize },
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
    let raw = zstd::bulk::decompress(bytes, decompressed_size(bytes, limit)?)
        .map_err(|e| DecodeError::Compression(e.to_string()))?;
    postcard::from_bytes(&raw).map_err(|e| DecodeError::Format(e.to_string()))
}

/// The buffer to decompress `bytes` into: the size its frame says (`encode` writes it),
/// refused over `limit`; `limit` for a frame that does not say. Decompressing fails if
/// the frame holds more than the buffer. Allocating the limit for every message (64 MiB
/// on the server) cost a mapping and its unmapping per request.
fn decompressed_size(bytes: &[u8], limit: usize) -> Result<usize, DecodeError> {
    match zstd::zstd_safe::get_frame_content_size(bytes) {
        Ok(Some(size)) if size > limit as u64 => Err(DecodeError::TooLarge { size, limit }),
        Ok(Some(size)) => Ok(size as usize),
        Ok(None) => Ok(limit),
        Err(_) => Err(DecodeError::Compression("no zstd frame header".into())),
    }
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

    /// Decode a phone's request, of any version from `OLDEST_VERSION` on (the request
    /// is the same in each).
    pub fn decode(bytes: &[u8], limit: usize) -> Result<SyncRequest, DecodeError> {
        let request: SyncRequest = decode(bytes, limit)?;
        if !(OLDEST_VERSION..=PROTOCOL_VERSION).contains(&request.version) {
            return Err(DecodeError::Version(request.version));
        }
        Ok(request)
    }
}

impl SyncResponse {
    /// An answer with `acks` that leaves the device at `position`, telling it its
    /// member's `role`, and brings nothing else (yet).
    pub fn new(acks: Vec<Ack>, position: Position, role: Role) -> SyncResponse {
        SyncResponse {
            version: PROTOCOL_VERSION,
            acks,
            data: Vec::new(),
            whole: None,
            removed: Vec::new(),
            position,
            more: false,
            reconcile_needed: false,
            server_heads: Vec::new(),
            role,
        }
    }

    /// Encode the server's answer to a request of `version` (from `OLDEST_VERSION` on),
    /// compressed at `RESPONSE_ZSTD_LEVEL`: version 3 is this message without `role`.
    pub fn encode_for(&self, version: u16) -> Vec<u8> {
        if version >= PROTOCOL_VERSION {
            return encode_at(self, RESPONSE_ZSTD_LEVEL);
        }
        let v3 = Version3 {
            version,
            acks: &self.acks,
            data: &self.data,
            whole: &self.whole,
            removed: &self.removed,
            position: &self.position,
            more: self.more,
            reconcile_needed: self.reconcile_needed,
            server_heads: &self.server_heads,
        };
        encode_at(&v3, RESPONSE_ZSTD_LEVEL)
    }

    pub fn decode(bytes: &[u8], limit: usize) -> Result<SyncResponse, DecodeError> {
        let response: SyncResponse = decode(bytes, limit)?;
        if response.version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(response.version));
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushing(bytes: Vec<u8>) -> SyncRequest {
        SyncRequest::new(None, vec![PushedChange { household_id: "h1".into(), bytes }])
    }

    #[test]
    fn a_message_is_refused_when_its_frame_says_it_is_over_the_limit() {
        let wire = encode(&pushing(vec![0; 4 * 1024 * 1024]));
        assert!(wire.len() < 1024, "zeros compress: {}", wire.len());
        let refused = SyncRequest::decode(&wire, 1024 * 1024).unwrap_err();
        assert!(matches!(refused, DecodeError::TooLarge { limit: 1_048_576, size } if size > 4 * 1024 * 1024));
        assert_eq!(SyncRequest::decode(&wire, 8 * 1024 * 1024).unwrap().changes[0].bytes.len(), 4 * 1024 * 1024);
    }

    #[test]
    fn a_frame_that_holds_more_than_it_says_or_does_not_say_is_held_to_the_limit() {
        let raw = postcard::to_allocvec(&pushing(vec![7; 100_000])).unwrap();
        // A frame without its size (a streaming encoder): decoded within the limit, and
        // refused over it.
        let mut unsized_frame = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        unsized_frame.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut unsized_frame, &raw).unwrap();
        let unsized_frame = unsized_frame.finish().unwrap();
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&unsized_frame).unwrap(), None);
        assert_eq!(SyncRequest::decode(&unsized_frame, 200_000).unwrap().changes[0].bytes, vec![7; 100_000]);
        assert!(matches!(SyncRequest::decode(&unsized_frame, 50_000), Err(DecodeError::Compression(_))));

        // A frame that says it holds less than it does.
        let mut lying = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        lying.set_pledged_src_size(Some(raw.len() as u64)).unwrap();
        std::io::Write::write_all(&mut lying, &raw).unwrap();
        let mut lying = lying.finish().unwrap();
        let said = zstd::zstd_safe::get_frame_content_size(&lying).unwrap();
        assert_eq!(said, Some(raw.len() as u64));
        // The frame header's last four bytes hold the size (a single-segment frame of
        // more than 65,791 bytes): say 1,000.
        let header = 4 + 1 + 4;
        lying[header - 4..header].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&lying).unwrap(), Some(1000));
        assert!(matches!(SyncRequest::decode(&lying, 200_000), Err(DecodeError::Compression(_))));

        // Not zstd at all.
        assert!(matches!(SyncRequest::decode(b"{\"version\":1}", 200_000), Err(DecodeError::Compression(_))));
    }
}
