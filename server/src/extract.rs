//! Request extractors whose rejections are `ServerError`s: a malformed, truncated or
//! oversized body, query or path gets the same JSON answer as every other error
//! (`{"error": "<中文> / <English>"}`), not axum's plain text.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection, StringRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;

use crate::error::ServerError;

/// `Checked(Json(body)): Checked<Json<T>>`, `Checked(bytes): Checked<Bytes>`,
/// `Checked(Query(q)): Checked<Query<T>>`...: axum's extractor `E`, rejected with a
/// `ServerError`.
pub struct Checked<E>(pub E);

/// What an axum rejection says: its status and its text.
pub trait Rejection {
    fn status(&self) -> StatusCode;
    fn body_text(&self) -> String;
}

macro_rules! rejections {
    ($($t:ty),*) => {$(
        impl Rejection for $t {
            fn status(&self) -> StatusCode {
                <$t>::status(self)
            }
            fn body_text(&self) -> String {
                <$t>::body_text(self)
            }
        }
    )*};
}
rejections!(BytesRejection, JsonRejection, PathRejection, QueryRejection, StringRejection);

fn rejected(r: impl Rejection) -> ServerError {
    let text = r.body_text();
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ServerError::TooLarge(text),
        _ => ServerError::BadRequest(format!("请求内容无法解析 / the request cannot be read: {text}")),
    }
}

impl<S: Send + Sync, E> FromRequest<S> for Checked<E>
where
    E: FromRequest<S>,
    E::Rejection: Rejection,
{
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ServerError> {
        E::from_request(req, state).await.map(Checked).map_err(rejected)
    }
}

impl<S: Send + Sync, E> FromRequestParts<S> for Checked<E>
where
    E: FromRequestParts<S>,
    E::Rejection: Rejection,
{
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ServerError> {
        E::from_request_parts(parts, state).await.map(Checked).map_err(rejected)
    }
}
