//! The one error type foreign code sees.
//!
//! A *flat* UniFFI error: each variant crosses the FFI as its kind plus the core's
//! bilingual `Display` text (Chinese / English), so Kotlin's `Exception.message`, Python's
//! `str(e)` and (through `bindings/swift/Sources/Doorstep/DoorstepError+LocalizedError.swift`)
//! Swift's `localizedDescription` show a sentence a member can read, e.g.
//! `未找到住户：h-1 / household not found: h-1`. A rich (field-carrying) error would make
//! Kotlin's `message` print its fields (`what=household, id=h-1, ...`) and lose the text;
//! the fields that matter for control flow are the variant itself.

use doorstep_core::Error as CoreError;

/// What went wrong, in terms a member or an app can act on. The message is
/// human-readable in Chinese and English.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum DoorstepError {
    /// No household, visit, issue, guardian or conflict with that id.
    #[error("{0}")]
    NotFound(String),
    /// The input is not acceptable; nothing was changed.
    #[error("{0}")]
    InvalidInput(String),
    /// The member may not make this change (another member's visit, a household's
    /// assignment...); nothing was changed.
    #[error("{0}")]
    NotAllowed(String),
    /// The problem cannot move from its current status to the requested one.
    #[error("{0}")]
    InvalidTransition(String),
    /// One household's stored document cannot be read; other households are fine.
    #[error("{0}")]
    CorruptHousehold(String),
    /// The sync server could not be reached (offline, timeout, connection cut); nothing
    /// was lost: the next sync delivers what is pending.
    #[error("{0}")]
    Network(String),
    /// The sync server refused the request or answered with an error (e.g. 401: a missing,
    /// wrong or revoked device token); nothing was lost.
    #[error("{0}")]
    Server(String),
    /// The replica file could not be read or written.
    #[error("{0}")]
    Storage(String),
}

impl From<CoreError> for DoorstepError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        match e {
            CoreError::NotFound { .. } => Self::NotFound(message),
            CoreError::InvalidInput { .. } => Self::InvalidInput(message),
            CoreError::NotAllowed { .. } => Self::NotAllowed(message),
            CoreError::InvalidTransition { .. } => Self::InvalidTransition(message),
            CoreError::CorruptHousehold { .. } => Self::CorruptHousehold(message),
            CoreError::Network { .. } => Self::Network(message),
            CoreError::Server { .. } => Self::Server(message),
            CoreError::Storage { .. } => Self::Storage(message),
        }
    }
}

pub(crate) type Result<T, E = DoorstepError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::Replica;

    #[test]
    fn errors_keep_their_kind_and_the_core_bilingual_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite3").to_string_lossy().into_owned();
        let replica = Replica::open(path, "m-1".into(), "d-1".into()).unwrap();
        let e = replica.household("h-x".into()).unwrap_err();
        assert_eq!(
            e,
            DoorstepError::NotFound("未找到住户：h-x / household not found: h-x".into())
        );
        // What crosses the FFI is this text (flat error: `ToString`).
        assert_eq!(e.to_string(), "未找到住户：h-x / household not found: h-x");

        let e = Replica::open(String::new(), " ".into(), "d".into())
            .err()
            .unwrap();
        assert!(
            matches!(e, DoorstepError::InvalidInput(ref m) if m.contains("must not be empty")),
            "{e}"
        );
    }
}
