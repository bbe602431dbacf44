//! Errors: a narrow public enum, readable by a person in Chinese and English.
//!
//! Rich causes (SQLite, Automerge, hydration) are folded into `Storage` or
//! `CorruptHousehold` with their text, so that callers match on what they can act on.

/// What went wrong, in terms a member or an app can act on.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// No household, visit, issue, guardian or conflict with that id.
    #[error("未找到{what_zh}：{id} / {what} not found: {id}")]
    NotFound { what: String, what_zh: String, id: String },
    /// The input is not acceptable; nothing was changed.
    #[error("输入无效：{reason_zh} / invalid input: {reason}")]
    InvalidInput { reason: String, reason_zh: String },
    /// The member may not make this change (another member's visit, a household's
    /// assignment...); nothing was changed. The reason is in Chinese and English.
    #[error("{reason}")]
    NotAllowed { reason: String },
    /// The problem cannot move from its current status to the requested one.
    #[error("问题状态不能从“{from}”改为“{to}” / an issue cannot move from {from} to {to}")]
    InvalidTransition { from: String, to: String },
    /// The stored document of one household cannot be read; other households are fine.
    #[error("住户 {household_id} 的数据已损坏，无法读取 / household {household_id} is corrupt and cannot be read: {reason}")]
    CorruptHousehold { household_id: String, reason: String },
    /// The sync server could not be reached (offline, timeout, connection cut).
    /// Nothing was lost: the next sync picks up where this one stopped.
    #[error("无法连接同步服务器，数据已保存在本机，稍后会自动重试 / cannot reach the sync server, your data is kept on this phone: {reason}")]
    Network { reason: String },
    /// The sync server refused the request or answered with an error.
    #[error("同步服务器拒绝了请求（{status}）/ the sync server refused the request ({status}): {message}")]
    Server { status: u16, message: String },
    /// The replica file could not be read or written.
    #[error("本机存储出错 / storage error: {reason}")]
    Storage { reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn not_found(what: &str, id: &str) -> Self {
        let what_zh = match what {
            "household" => "住户",
            "visit" => "走访记录",
            "issue" => "问题",
            "guardian" => "监护人",
            "student" => "学生",
            "conflict" => "冲突",
            _ => "记录",
        };
        Error::NotFound { what: what.into(), what_zh: what_zh.into(), id: id.into() }
    }

    pub(crate) fn invalid(reason_zh: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput { reason: reason.into(), reason_zh: reason_zh.into() }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage { reason: e.to_string() }
    }
}

impl From<automerge::AutomergeError> for Error {
    fn from(e: automerge::AutomergeError) -> Self {
        Error::Storage { reason: format!("automerge: {e}") }
    }
}
