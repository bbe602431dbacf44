//! Server errors and how they map to HTTP statuses, with bilingual messages.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("请求无效 / bad request: {0}")]
    BadRequest(String),
    #[error("未登录或凭证无效 / missing, wrong or revoked token")]
    Unauthorized,
    #[error("无权操作 / forbidden: {0}")]
    Forbidden(String),
    #[error("未找到 / not found: {0}")]
    NotFound(String),
    #[error("请求过大 / request too large: {0}")]
    TooLarge(String),
    /// Another process has the data directory open.
    #[error("暂不可用 / unavailable: {0}")]
    Busy(String),
    #[error("服务器内部错误 / internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;

impl From<rusqlite::Error> for ServerError {
    fn from(e: rusqlite::Error) -> Self {
        ServerError::Internal(e.to_string())
    }
}

impl From<doorstep_core::Error> for ServerError {
    fn from(e: doorstep_core::Error) -> Self {
        use doorstep_core::Error as E;
        match e {
            E::NotFound { .. } => ServerError::NotFound(e.to_string()),
            E::InvalidInput { .. } | E::InvalidTransition { .. } => ServerError::BadRequest(e.to_string()),
            other => ServerError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = match &self {
            ServerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServerError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServerError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServerError::NotFound(_) => StatusCode::NOT_FOUND,
            ServerError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServerError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "request failed");
        }
        (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}
