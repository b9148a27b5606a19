//! Source freshness: a warning is logged and counted, an error skips the jobs reading the source
//! (and their downstream) with the reason in `_runs` and the daemon's metrics.

use std::time::Duration;

use chrono::{DateTime, Utc};
use retention::clock::FixedClock;
use retention::serve::daemon::{Daemon, DaemonSettings};

use super::*;

/// The fixture's orders with a freshness rule on its `dt` partitions (newest: 2026-02-02, so the
/// data reaches 2026-02-03T00:00Z).
fn with_rule(fx: &Fixture, rule: &str) {
    let sources = SOURCES.replace(
        "name = \"orders\"\npartition_columns = [\"dt\"]",
        &format!("name = \"orders\"\npartition_columns = [\"dt\"]\nfreshness = {rule}"),
    );
    assert_ne!(sources, SOURCES);
    write(fx.dir(), "jobs/sources.toml", &sources);
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

#[tokio::test]
async fn a_stale_source_warns_then_skips_its_jobs_and_their_downstream() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    // Ten months old by today's clock: past warn_after only, the run goes on.
    with_rule(&fx, r#"{ column = "dt", warn_after = "1h" }"#);
    fx.cmd(&["run", "--all"]).await.unwrap();
    assert_eq!(
        fx.rows("select count(*) as runs, min(status) as status from _runs")
            .await,
        "runs|status\n3|succeeded"
    );
    // Past error_after: the jobs reading orders are skipped, channel_value after them.
    with_rule(
        &fx,
        r#"{ column = "dt", warn_after = "1h", error_after = "2h" }"#,
    );
    let before = fx.snapshot().await;
    let err = fx.cmd(&["run", "--all"]).await.unwrap_err();
    assert_eq!(err.to_string(), "3 of 3 job(s) failed");
    assert_eq!(fx.snapshot().await, before, "nothing published");
    let skipped = fx
        .rows("select job, status, substr(error, 1, 66) as reason from _runs where status <> 'succeeded'")
        .await;
    assert_eq!(
        skipped,
        "job|status|reason\n\
         channel_value|skipped|skipped: upstream customer_value did not succeed\n\
         customer_value|skipped|skipped: source `orders`: newest dt is 2026-02-03T00:00:00+00:00 (\n\
         daily_revenue|skipped|skipped: source `orders`: newest dt is 2026-02-03T00:00:00+00:00 ("
    );
}

#[tokio::test]
async fn the_daemon_counts_stale_sources_and_records_the_age() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    with_rule(
        &fx,
        r#"{ column = "dt", warn_after = "26h", error_after = "50h" }"#,
    );
    let daemon = |now: &str| {
        let over = Overrides::with_storage(Some(fx.raw.to_string()), Some(fx.curated.to_string()));
        let project = Project::load(fx.dir(), &over).unwrap();
        let engine = retention::app::engine(project, fx.stores.clone())
            .unwrap()
            .with_clock(Arc::new(FixedClock(utc(now))));
        let settings = DaemonSettings {
            daemon_id: "d".into(),
            max_concurrent: 1,
            poll: Duration::from_millis(20),
            retry_delay: Duration::from_millis(10),
            lease_margin: retention::project::run_policy::LEASE_MARGIN,
        };
        Daemon::new(Arc::new(Workspace::load(engine).unwrap()), settings).unwrap()
    };
    // 20 hours after the newest day ended: fresh.
    let d = daemon("2026-02-03T20:00:00Z");
    let done = d
        .ensure("daily_revenue".into(), utc("2026-02-03T06:00:00Z"))
        .await
        .unwrap();
    assert_eq!(done.outcome, "succeeded");
    assert!(
        !d.metrics
            .encode()
            .contains("retention_stale_sources_total{")
    );
    // 30 hours: a warning, counted; the job runs.
    let d = daemon("2026-02-04T06:00:00Z");
    let done = d
        .ensure("daily_revenue".into(), utc("2026-02-04T06:00:00Z"))
        .await
        .unwrap();
    assert_eq!(done.outcome, "succeeded");
    assert!(
        d.metrics
            .encode()
            .contains("retention_stale_sources_total{source=\"orders\",level=\"warn\"} 1")
    );
    // 60 hours: an error; the slot is skipped with the age in `_runs`.
    let d = daemon("2026-02-05T12:00:00Z");
    let done = d
        .ensure("daily_revenue".into(), utc("2026-02-05T06:00:00Z"))
        .await
        .unwrap();
    assert_eq!(done.outcome, "skipped");
    let text = d.metrics.encode();
    assert!(
        text.contains("retention_stale_sources_total{source=\"orders\",level=\"error\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("retention_runs_total{job=\"daily_revenue\",status=\"skipped\"} 1"),
        "{text}"
    );
    assert_eq!(
        fx.rows("select slot, status, error from _runs").await,
        "slot|status|error\n\
         2026-02-03T06:00:00Z|succeeded|\n\
         2026-02-04T06:00:00Z|succeeded|\n\
         2026-02-05T06:00:00Z|skipped|skipped: source `orders`: newest dt is 2026-02-03T00:00:00+00:00 (2days 12h old): error"
    );
}
