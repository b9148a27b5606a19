//! The daemon's Prometheus metrics (prometheus-client, OpenMetrics text): runs by job and
//! status, run duration, rows written, the last success per job, lease takeovers, retries and
//! sources found stale.

use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The `job` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

/// The `job` and `status` labels of a run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub job: String,
    pub status: String,
}

/// The `source` and freshness `level` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StaleLabels {
    pub source: String,
    pub level: String,
}

type DurationFamily = Family<JobLabel, Histogram, fn() -> Histogram>;

/// Every metric the daemon keeps, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    duration: DurationFamily,
    rows_written: Family<JobLabel, Counter>,
    last_success: Family<JobLabel, Gauge<f64, AtomicU64>>,
    takeovers: Family<JobLabel, Counter>,
    retries: Family<JobLabel, Counter>,
    stale: Family<StaleLabels, Counter>,
}

/// Run durations from 0.25 s to about 2.3 hours.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.25, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            runs: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            rows_written: Family::default(),
            last_success: Family::default(),
            takeovers: Family::default(),
            retries: Family::default(),
            stale: Family::default(),
            registry: Registry::with_prefix("retention"),
        };
        let registry = &mut m.registry;
        registry.register("runs", "Job runs (tries) by job and status", m.runs.clone());
        registry.register_with_unit(
            "run_duration",
            "How long job runs took",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "rows_written",
            "Rows published by job",
            m.rows_written.clone(),
        );
        registry.register_with_unit(
            "last_success_timestamp",
            "When each job last succeeded (Unix time)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register(
            "lease_takeovers",
            "Slots taken over from a daemon whose lease expired",
            m.takeovers.clone(),
        );
        registry.register("retries", "Transient failures retried", m.retries.clone());
        registry.register(
            "stale_sources",
            "Sources found past their freshness limit by a run (level warn or error)",
            m.stale.clone(),
        );
        m
    }
}

fn job(job: &str) -> JobLabel {
    JobLabel {
        job: job.to_string(),
    }
}

impl Metrics {
    /// One try of `job` ended with `status` after `seconds`, having written `rows`.
    pub fn run(&self, name: &str, status: &str, seconds: f64, rows: i64, at: DateTime<Utc>) {
        self.runs
            .get_or_create(&RunLabels {
                job: name.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.duration.get_or_create(&job(name)).observe(seconds);
        if rows > 0 {
            self.rows_written
                .get_or_create(&job(name))
                .inc_by(rows as u64);
        }
        if status == "succeeded" {
            self.last_success
                .get_or_create(&job(name))
                .set(at.timestamp_micros() as f64 / 1e6);
        }
    }

    pub fn takeover(&self, name: &str) {
        self.takeovers.get_or_create(&job(name)).inc();
    }

    pub fn retry(&self, name: &str) {
        self.retries.get_or_create(&job(name)).inc();
    }

    /// A run found `source` past its `level` (`warn` or `error`) freshness limit.
    pub fn stale(&self, source: &str, level: &str) {
        self.stale
            .get_or_create(&StaleLabels {
                source: source.to_string(),
                level: level.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_with_its_labels() {
        let m = Metrics::default();
        let at = DateTime::from_timestamp(1_790_000_000, 500_000_000).unwrap();
        m.run("orders", "succeeded", 1.5, 42, at);
        m.run("orders", "failed", 0.1, 0, at);
        m.retry("orders");
        m.takeover("orders");
        m.stale("orders", "warn");
        let text = m.encode();
        for line in [
            "retention_runs_total{job=\"orders\",status=\"succeeded\"} 1",
            "retention_runs_total{job=\"orders\",status=\"failed\"} 1",
            "retention_rows_written_total{job=\"orders\"} 42",
            "retention_last_success_timestamp_seconds{job=\"orders\"} 1790000000.5",
            "retention_lease_takeovers_total{job=\"orders\"} 1",
            "retention_retries_total{job=\"orders\"} 1",
            "retention_stale_sources_total{source=\"orders\",level=\"warn\"} 1",
            "retention_run_duration_seconds_count{job=\"orders\"} 2",
            "retention_run_duration_seconds_sum{job=\"orders\"} 1.6",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
