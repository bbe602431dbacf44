//! The HTTP surface (axum): sync, enrolment, the admin JSON API, health and metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use automerge::Change;
use doorstep_core::document::{decode_change, operations_claimed};
use doorstep_core::sync::protocol::{
    self, DecodeError, SyncRequest, MAX_HOUSEHOLD_ID_BYTES, MAX_REQUEST_OPERATIONS, OLDEST_VERSION, PROTOCOL_VERSION,
};
use doorstep_core::NewHousehold;
use serde::Deserialize;

use crate::admin;
use crate::auth::{hash_chosen_secret, hash_secret};
use crate::config::Limits;
use crate::engine::SyncJob;
use crate::error::{Result, ServerError};
use crate::extract::Checked;
use crate::metrics::Metrics;
use crate::org::{Branch, Community, Member, Role};
use crate::readers::Readers;
use crate::store::read::ReadStore;
use crate::store::sqlite_read::SqliteReader;
use crate::store::QuarantineStatus;
use crate::writer::Writer;

pub struct AppState {
    pub writer: Writer,
    /// Reading for the read API and backups.
    pub readers: Readers<SqliteReader>,
    /// Looking up the member behind the token each request carries.
    pub tokens: Readers<SqliteReader>,
    pub limits: Limits,
    pub started: Instant,
    pub metrics: Metrics,
    /// The hash of the token `/metrics` asks for, if one was set (hashed once, at start).
    pub metrics_token_hash: Option<String>,
    /// Sync requests whose many changes are being decoded at once, at most one per core:
    /// each on one of tokio's blocking threads, which are kept and reused (unbounded, a
    /// burst of such requests would start hundreds of threads).
    pub decoding: Arc<tokio::sync::Semaphore>,
}

pub type App = Arc<AppState>;

pub fn router(state: App) -> Router {
    let limit = state.limits.max_request_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/sync", post(sync).layer(axum::middleware::from_fn_with_state(state.clone(), count_refused_syncs)))
        .route("/v1/enrol", post(enrol))
        .route("/v1/admin/organisation", get(organisation))
        .route("/v1/admin/branches", post(add_branch))
        .route("/v1/admin/communities", post(add_community))
        .route("/v1/admin/members", post(add_member))
        .route("/v1/admin/households", post(create_household))
        .route("/v1/admin/households/import", post(import_households))
        .route("/v1/admin/households/{id}/assignment", post(assign))
        .route("/v1/admin/devices", post(enrol_device).get(list_devices))
        .route("/v1/admin/devices/{id}/revoke", post(revoke_device))
        .route("/v1/admin/backup", get(backup))
        .route("/v1/admin/quarantine", get(list_quarantine))
        .route("/v1/admin/quarantine/{hash}/release", post(release))
        .route("/v1/admin/quarantine/{hash}/discard", post(discard))
        .merge(crate::read_api::routes())
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(no_such_method)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn no_such_endpoint(uri: axum::http::Uri) -> ServerError {
    ServerError::NotFound(format!("endpoint {}", uri.path()))
}

async fn no_such_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let text = format!("该接口不支持 {method} 请求 / {} does not take {method}", uri.path());
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, Json(serde_json::json!({ "error": text }))).into_response()
}

fn bearer(headers: &HeaderMap) -> Result<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or(ServerError::Unauthorized)
}

/// The member behind a request's token (enrolled, not revoked).
async fn caller(app: &App, headers: &HeaderMap) -> Result<Member> {
    let token_hash = hash_secret(&bearer(headers)?);
    app.tokens
        .read(move |store| store.member_by_token(&token_hash)?.ok_or(ServerError::Unauthorized))
        .await
}

/// The member behind the request's token, as a handler's first argument: the token is
/// checked before the request's query or body is read, so that a caller without one
/// gets 401, not a complaint about a body the server never wanted from it.
pub struct Caller(pub Member);

impl FromRequestParts<App> for Caller {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Caller> {
        caller(app, &parts.headers).await.map(Caller)
    }
}

/// `Caller`, for admins only (403 otherwise).
pub struct AdminCaller(pub Member);

impl FromRequestParts<App> for AdminCaller {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<AdminCaller> {
        let member = caller(app, &parts.headers).await?;
        if member.role != Role::Admin {
            return Err(ServerError::Forbidden("只有管理员可以执行此操作 / admins only".into()));
        }
        Ok(AdminCaller(member))
    }
}

/// Count the sync requests answered with an error, whatever refused them (the token, the
/// body's size or contents, the server).
async fn count_refused_syncs(State(app): State<App>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    if !response.status().is_success() {
        app.metrics.refused_sync(response.status().as_u16());
    }
    response
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Result<Response> {
    if let Some(expected) = &app.metrics_token_hash {
        if hash_chosen_secret(&bearer(&headers)?) != *expected {
            return Err(ServerError::Unauthorized);
        }
    }
    let text = app.metrics.render(app.started, app.writer.compactions_due());
    Ok(([(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)], text).into_response())
}

async fn sync(State(app): State<App>, headers: HeaderMap, _: Caller, Checked(body): Checked<Bytes>) -> Result<Response> {
    let started = Instant::now();
    let token_hash = hash_secret(&bearer(&headers)?);
    let (request, operations) = decode_sync(&body, app.limits.max_decoded_bytes)?;
    // Decoding changes takes CPU in proportion to the operations they claim: many are
    // decoded off the threads that serve every connection.
    let (request, changes) = if operations <= DECODED_INLINE && request.changes.len() <= CHANGES_INLINE {
        let changes = decode_changes(&request)?;
        (request, changes)
    } else {
        let internal = |e: &dyn std::fmt::Display| ServerError::Internal(format!("decoding a sync request: {e}"));
        // Held by the decoding itself, which goes on should the caller hang up.
        let decoding = app.decoding.clone().acquire_owned().await.map_err(|e| internal(&e))?;
        let decoded = tokio::task::spawn_blocking(move || {
            let _decoding = decoding;
            decode_changes(&request).map(|changes| (request, changes))
        });
        decoded.await.map_err(|e| internal(&e))??
    };
    let (pushed, version) = (changes.len(), request.version);
    let response = app.writer.sync(SyncJob { token_hash, request, changes }).await?;
    let body = response.encode_for(version);
    app.metrics.observe_sync(started.elapsed(), pushed, body.len());
    Ok(([(header::CONTENT_TYPE, protocol::CONTENT_TYPE)], body).into_response())
}

/// A sync request, decoded, its pushed changes checked and counted (the operations they
/// claim together), but not decoded yet; or why not (400).
fn decode_sync(body: &[u8], max_decoded_bytes: usize) -> Result<(SyncRequest, u64)> {
    let request = SyncRequest::decode(body, max_decoded_bytes).map_err(|e| match e {
        // A phone whose app is too old (or newer than the server): the member reads this.
        DecodeError::Version(theirs) => ServerError::BadRequest(format!(
            "请更新应用：服务器支持同步协议第 {OLDEST_VERSION} 至 {PROTOCOL_VERSION} 版，本应用为第 {theirs} 版 / please \
             update the app: the server speaks sync protocol versions {OLDEST_VERSION} to {PROTOCOL_VERSION}, this app \
             version {theirs}"
        )),
        e => ServerError::BadRequest(format!("同步请求无法解析 / the sync request cannot be read: {e}")),
    })?;
    let mut operations = 0u64;
    for (i, pushed) in request.changes.iter().enumerate().map(|(i, p)| (i + 1, p)) {
        if pushed.household_id.trim().is_empty() || pushed.household_id.len() > MAX_HOUSEHOLD_ID_BYTES {
            return Err(ServerError::BadRequest(format!(
                "第 {i} 个变更的住户编号为空或过长 / change {i} has no household id, or one longer than \
                 {MAX_HOUSEHOLD_ID_BYTES} bytes"
            )));
        }
        operations += operations_claimed(&pushed.bytes).map_err(|e| undecodable(i, e))?;
    }
    if operations > MAX_REQUEST_OPERATIONS {
        return Err(ServerError::BadRequest(format!(
            "一次同步的变更过大，请更新应用 / the changes of this request claim {operations} operations, more than \
             {MAX_REQUEST_OPERATIONS} in one request"
        )));
    }
    Ok((request, operations))
}

/// The pushed changes of a request `decode_sync` passed, decoded.
fn decode_changes(request: &SyncRequest) -> Result<Vec<(String, Change)>> {
    let decoded = request.changes.iter().enumerate().map(|(i, pushed)| {
        let change = decode_change(pushed.bytes.clone()).map_err(|e| undecodable(i + 1, e))?;
        Ok((pushed.household_id.clone(), change))
    });
    decoded.collect()
}

fn undecodable(i: usize, e: String) -> ServerError {
    ServerError::BadRequest(format!("第 {i} 个变更无法解码 / change {i} cannot be decoded: {e}"))
}

/// Changes claiming more operations than this together are decoded off the threads that
/// serve connections (about 1 ms of decoding; a phone's usual push claims a few hundred).
const DECODED_INLINE: u64 = 10_000;

/// Nor more changes than this (each costs a few microseconds to decode, however few
/// operations it claims).
const CHANGES_INLINE: usize = 256;

/// A backup of the store, made now and streamed (admins): what `doorstep-server backup`
/// writes, to keep off the server's disk.
async fn backup(State(app): State<App>, _: AdminCaller) -> Result<Response> {
    let (file, bytes) = app.readers.read(|store| store.back_up_for_download()).await?;
    let name = format!("doorstep-{}.sqlite3", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file)));
    let headers = [
        (header::CONTENT_TYPE, "application/vnd.sqlite3".to_string()),
        (header::CONTENT_LENGTH, bytes.to_string()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
    ];
    Ok((headers, body).into_response())
}

#[derive(Deserialize)]
struct EnrolRequest {
    code: String,
}

async fn enrol(State(app): State<App>, Checked(Json(body)): Checked<Json<EnrolRequest>>) -> Result<Json<admin::DeviceToken>> {
    Ok(Json(app.writer.run(move |e| admin::exchange_code(e, &body.code)).await?))
}

async fn organisation(State(app): State<App>, _: AdminCaller) -> Result<Json<admin::Organisation>> {
    Ok(Json(app.writer.run(admin::organisation).await?))
}

async fn add_branch(State(app): State<App>, _: AdminCaller, Checked(Json(b)): Checked<Json<Branch>>) -> Result<Json<Branch>> {
    let out = b.clone();
    app.writer.run(move |e| admin::add_branch(e, &b)).await?;
    Ok(Json(out))
}

async fn add_community(State(app): State<App>, _: AdminCaller, Checked(Json(c)): Checked<Json<Community>>) -> Result<Json<Community>> {
    let out = c.clone();
    app.writer.run(move |e| admin::add_community(e, &c)).await?;
    Ok(Json(out))
}

async fn add_member(State(app): State<App>, _: AdminCaller, Checked(Json(m)): Checked<Json<Member>>) -> Result<Json<Member>> {
    let out = m.clone();
    app.writer.run(move |e| admin::add_member(e, &m)).await?;
    Ok(Json(out))
}

/// A household as admins send it (JSON).
#[derive(Deserialize)]
struct HouseholdBody {
    family_name: String,
    #[serde(default)]
    address: String,
    community_id: String,
    branch_id: String,
    #[serde(default)]
    assigned_members: Vec<String>,
    #[serde(default)]
    notes: String,
}

async fn create_household(
    State(app): State<App>,
    AdminCaller(admin): AdminCaller,
    Checked(Json(h)): Checked<Json<HouseholdBody>>,
) -> Result<Json<serde_json::Value>> {
    let by = admin.id;
    let new = NewHousehold {
        family_name: h.family_name,
        address: h.address,
        community_id: h.community_id,
        branch_id: h.branch_id,
        assigned_members: h.assigned_members,
        notes: h.notes,
        ..Default::default()
    };
    let id = app.writer.run(move |e| admin::create_household(e, &by, &new)).await?;
    Ok(Json(serde_json::json!({ "id": id })))
}

async fn import_households(State(app): State<App>, AdminCaller(admin): AdminCaller, Checked(body): Checked<axum::body::Bytes>) -> Result<Json<serde_json::Value>> {
    let by = admin.id;
    let ids = app.writer.run(move |e| admin::import_households_csv(e, &by, &body)).await?;
    Ok(Json(serde_json::json!({ "imported": ids.len(), "ids": ids })))
}

#[derive(Deserialize)]
struct AssignmentBody {
    member_id: String,
    #[serde(default = "yes")]
    assigned: bool,
}

fn yes() -> bool {
    true
}

async fn assign(
    State(app): State<App>,
    AdminCaller(admin): AdminCaller,
    Checked(Path(id)): Checked<Path<String>>,
    Checked(Json(body)): Checked<Json<AssignmentBody>>,
) -> Result<Json<serde_json::Value>> {
    let by = admin.id;
    app.writer.run(move |e| admin::assign(e, &by, &id, &body.member_id, body.assigned)).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

#[derive(Deserialize)]
struct DeviceBody {
    member_id: String,
    #[serde(default)]
    label: String,
    /// Only for a phone this server does not know, which keeps its id (after a restore).
    #[serde(default)]
    device_id: Option<String>,
}

async fn enrol_device(State(app): State<App>, _: AdminCaller, Checked(Json(body)): Checked<Json<DeviceBody>>) -> Result<Json<admin::Enrolment>> {
    Ok(Json(app.writer.run(move |e| admin::enrol_device(e, &body.member_id, &body.label, body.device_id.as_deref())).await?))
}

#[derive(Deserialize)]
struct DevicesQuery {
    member: Option<String>,
}

async fn list_devices(
    State(app): State<App>,
    _: AdminCaller,
    Checked(Query(q)): Checked<Query<DevicesQuery>>,
) -> Result<Json<Vec<crate::org::Device>>> {
    Ok(Json(app.writer.run(move |e| admin::devices(e, q.member.as_deref())).await?))
}

async fn revoke_device(State(app): State<App>, _: AdminCaller, Checked(Path(id)): Checked<Path<String>>) -> Result<Json<serde_json::Value>> {
    app.writer.run(move |e| admin::revoke_device(e, &id)).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

#[derive(Deserialize)]
struct QuarantineQuery {
    status: Option<String>,
}

async fn list_quarantine(
    State(app): State<App>,
    _: AdminCaller,
    Checked(Query(q)): Checked<Query<QuarantineQuery>>,
) -> Result<Json<Vec<crate::store::QuarantinedChange>>> {
    let status = match q.status.as_deref() {
        None => None,
        Some("held") => Some(QuarantineStatus::Held),
        Some("released") => Some(QuarantineStatus::Released),
        Some("discarded") => Some(QuarantineStatus::Discarded),
        Some(other) => {
            return Err(ServerError::BadRequest(format!(
                "状态应为 held、released 或 discarded / status must be held, released or discarded, not {other:?}"
            )))
        }
    };
    Ok(Json(app.writer.run(move |e| admin::quarantined(e, status)).await?))
}

async fn release(State(app): State<App>, AdminCaller(admin): AdminCaller, Checked(Path(hash)): Checked<Path<String>>) -> Result<Json<serde_json::Value>> {
    let by = admin.id;
    app.writer.run(move |e| e.release(&by, &hash)).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

async fn discard(State(app): State<App>, AdminCaller(admin): AdminCaller, Checked(Path(hash)): Checked<Path<String>>) -> Result<Json<serde_json::Value>> {
    let by = admin.id;
    app.writer.run(move |e| e.discard(&by, &hash)).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}
