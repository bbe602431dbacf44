//! The Doorstep sync server.
//!
//! - [`engine`]: every write, on one thread: sync (push, validate, quarantine, pull),
//!   admin actions; group commit. [`writer`] is its async handle.
//! - [`merge`]: pushed changes checked (by the core's `document::rules`, the rules phones
//!   also check) and merged household by household, in parallel.
//! - [`store`]: storage traits, free of SQL; [`store::sqlite`] the embedded store.
//! - [`http`]: the axum routes; [`read_api`] the coordinator's JSON read API; [`readers`]
//!   the threads that read the store for them.
//! - [`admin`]: organisation, households, CSV import, devices, quarantine (CLI and API).
//! - [`backups`]: the backups the server takes on its own schedule.
//! - [`auth`], [`org`], [`config`], [`metrics`], [`demo`], [`error`]; [`extract`]: request
//!   extractors that reject with an [`error::ServerError`].

pub mod admin;
pub mod auth;
pub mod backups;
pub mod config;
pub mod demo;
pub mod engine;
pub mod error;
pub mod extract;
pub mod http;
pub mod merge;
pub mod metrics;
pub mod org;
pub mod read_api;
pub mod readers;
pub mod store;
pub mod writer;

use std::sync::Arc;
use std::time::Instant;

use config::Config;
use engine::Engine;
use readers::Readers;
use store::sqlite::SqliteStore;
use store::sqlite_read::SqliteReader;

/// Open the store and run the server until Ctrl-C / SIGTERM.
pub async fn serve(config: Config) -> Result<(), String> {
    let store = SqliteStore::open(&config.data_dir).map_err(|e| e.to_string())?;
    let mut engine = Engine::keeping(store, config.limits.cached_households);
    let demo_coordinator = if config.demo { demo::seed(&mut engine).map_err(|e| e.to_string())? } else { None };
    let due = engine.find_compactions_due().map_err(|e| e.to_string())?;
    if due > 0 {
        tracing::info!(households = due, "household documents to compact once idle");
    }
    let store_file = config.data_dir.join(store::data_dir::STORE_FILE);
    let start_failed = |e: std::io::Error| format!("cannot start the reader threads: {e}");
    let readers = |threads, name| {
        let store_file = store_file.clone();
        Readers::start(move || SqliteReader::open(&store_file), threads, name).map_err(start_failed)
    };
    let state = Arc::new(http::AppState {
        writer: writer::Writer::start(engine),
        readers: readers(readers::READER_THREADS, "doorstep-read")?,
        tokens: readers(readers::TOKEN_THREADS, "doorstep-token")?,
        limits: config.limits.clone(),
        started: Instant::now(),
        metrics: metrics::Metrics::default(),
        metrics_token_hash: config.metrics_token.as_deref().filter(|t| !t.is_empty()).map(auth::hash_chosen_secret),
        decoding: Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))),
    });
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    // Stopped (after a backup under way) when `serve` returns.
    let _backups = match &config.backups {
        Some(plan) => Some(
            backups::start(config.data_dir.clone(), plan.clone(), state.metrics.backups.clone())
                .map_err(|e| {
                    let dir = plan.dir.display();
                    format!("无法在 {dir} 中开始定时备份 / cannot start the backups into {dir}: {e}")
                })?,
        ),
        None => None,
    };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "doorstep-server listening");
    if let Some(token) = demo_coordinator {
        println!("  try: curl -H 'Authorization: Bearer {token}' http://{addr}/v1/stats");
    }
    println!("doorstep-server listening on http://{addr}");
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler installs");
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("stopping: answering the requests under way, then exiting");
        })
        .await
        .map_err(|e| e.to_string())
}
