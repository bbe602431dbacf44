//! `/metrics` in the OpenMetrics text format (prometheus-client), which Prometheus reads.

use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What the backup schedule (`crate::backups`) reports.
#[derive(Clone, Default)]
pub struct BackupMetrics {
    pub taken: Counter,
    pub failed: Counter,
    /// Unix time of the last backup written, and of the next one due.
    pub last_at: Gauge,
    pub next_at: Gauge,
}

pub struct Metrics {
    registry: Registry,
    pub backups: BackupMetrics,
    syncs: Counter,
    refused_syncs: Family<Vec<(String, String)>, Counter>,
    pushed_changes: Counter,
    response_bytes: Counter,
    sync_seconds: Histogram,
    uptime_seconds: Gauge,
    compactions_due: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("doorstep");
        let syncs = Counter::default();
        let refused_syncs = Family::<Vec<(String, String)>, Counter>::default();
        let pushed_changes = Counter::default();
        let response_bytes = Counter::default();
        let sync_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let uptime_seconds = Gauge::default();
        let compactions_due = Gauge::default();
        registry.register("sync_requests", "Sync requests answered", syncs.clone());
        registry.register("sync_refused", "Sync requests refused, by HTTP status", refused_syncs.clone());
        registry.register("pushed_changes", "Changes phones pushed (accepted or quarantined)", pushed_changes.clone());
        registry.register("sync_response_bytes", "Bytes sent in sync responses", response_bytes.clone());
        registry.register("sync_duration_seconds", "Time to answer a sync request", sync_seconds.clone());
        registry.register("uptime_seconds", "Seconds since the server started", uptime_seconds.clone());
        registry.register(
            "compactions_due",
            "Households whose stored changes wait for the writer to be idle to be compacted",
            compactions_due.clone(),
        );
        let backups = BackupMetrics::default();
        registry.register("backups_taken", "Backups the server wrote on its schedule", backups.taken.clone());
        registry.register("backups_failed", "Scheduled backups that failed (see the log)", backups.failed.clone());
        registry.register(
            "backup_last_timestamp_seconds",
            "Unix time of the last scheduled backup written (0: none since the server started)",
            backups.last_at.clone(),
        );
        registry.register(
            "backup_next_timestamp_seconds",
            "Unix time the next scheduled backup is due (0: no schedule)",
            backups.next_at.clone(),
        );
        Metrics { registry, backups, syncs, refused_syncs, pushed_changes, response_bytes, sync_seconds, uptime_seconds, compactions_due }
    }
}

impl Metrics {
    pub fn observe_sync(&self, took: Duration, pushed: usize, response_bytes: usize) {
        self.syncs.inc();
        self.pushed_changes.inc_by(pushed as u64);
        self.response_bytes.inc_by(response_bytes as u64);
        self.sync_seconds.observe(took.as_secs_f64());
    }

    /// A sync request answered with an error (`status`: 400, 401, 413, 500...).
    pub fn refused_sync(&self, status: u16) {
        self.refused_syncs.get_or_create(&vec![("status".to_string(), status.to_string())]).inc();
    }

    /// The content type of what `render` writes.
    pub const CONTENT_TYPE: &'static str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    pub fn render(&self, started: Instant, compactions_due: usize) -> String {
        self.uptime_seconds.set(started.elapsed().as_secs() as i64);
        self.compactions_due.set(compactions_due as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode to a string");
        out
    }
}
