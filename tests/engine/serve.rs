//! The daemon: cron firings, slot leases racing on every backend, racing daemons running each slot
//! once, takeover of a stopped holder, the publish fence, retries, catch-up, downstream triggers,
//! and the serve loop with its signals.

use std::time::Duration;

use chrono::{DateTime, Utc};
use retention::clock::{FixedClock, ManualClock, SharedClock};
use retention::project::run_policy::Catchup;
use retention::serve::daemon::{Daemon, DaemonSettings};
use retention::serve::slots::{self, JobCron};
use retention::store::lease::{Claim, Lease, Leases};

use super::*;
use crate::stores::FaultyStore;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

const SLOTS: [&str; 3] = [
    "2026-12-01T06:00:00Z",
    "2026-12-02T06:00:00Z",
    "2026-12-03T06:00:00Z",
];

fn settings(id: &str) -> DaemonSettings {
    DaemonSettings {
        daemon_id: id.into(),
        max_concurrent: 2,
        poll: Duration::from_millis(20),
        retry_delay: Duration::from_millis(10),
        lease_margin: retention::project::run_policy::LEASE_MARGIN,
    }
}

impl Fixture {
    /// A daemon with its own workspace (as another process would have) on `stores`.
    fn daemon_on(&self, id: &str, clock: SharedClock, stores: Stores) -> Arc<Daemon> {
        let over =
            Overrides::with_storage(Some(self.raw.to_string()), Some(self.curated.to_string()));
        let project = Project::load(self.dir(), &over).unwrap();
        let engine = retention::app::engine(project, stores)
            .unwrap()
            .with_clock(clock);
        Daemon::new(Arc::new(Workspace::load(engine).unwrap()), settings(id)).unwrap()
    }

    fn daemon(&self, id: &str, clock: SharedClock) -> Arc<Daemon> {
        self.daemon_on(id, clock, self.stores.clone())
    }

    fn leases(&self) -> Leases {
        Leases::new(&self.stores, &self.curated).unwrap()
    }

    /// How many commits of `table` were published for each slot, as `slot=count` lines.
    async fn commits_per_slot(&self, table: &str) -> String {
        use futures::StreamExt;
        let url = curated::table_url(&self.curated, table).unwrap();
        let t = curated::open(&self.stores, &url).await.unwrap().unwrap();
        let history: Vec<_> = t.history(None).collect().await;
        let mut per: std::collections::BTreeMap<String, usize> = Default::default();
        for h in history {
            let info = h.unwrap().info;
            let slot = info
                .get(curated::SLOT_KEY)
                .and_then(|v| v.as_str())
                .unwrap_or("none");
            *per.entry(slot.to_string()).or_default() += 1;
        }
        per.iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn system() -> SharedClock {
    retention::clock::system()
}

// ---------------------------------------------------------------------------------------------
// Slots and firings
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_repository_schedule_runs_the_close_candidate_report_after_the_finance_jobs() {
    let project =
        Project::load(Path::new(env!("CARGO_MANIFEST_DIR")), &Overrides::default()).unwrap();
    let ws = retention::app::workspace(project, Stores::default()).unwrap();
    let firings = slots::firings(
        &ws,
        utc("2026-11-30T00:00:00Z"),
        utc("2026-12-03T00:00:00Z"),
    )
    .unwrap();
    let when = |job: &str| -> Vec<String> {
        firings
            .iter()
            .filter(|(_, jobs)| jobs.iter().any(|j| j == job))
            .map(|(at, _)| at.to_rfc3339())
            .collect()
    };
    assert_eq!(when("close_candidates"), vec!["2026-12-01T07:30:00+00:00"]);
    // The weekly report: Monday 08:00 UTC ([report] in retention.toml).
    assert_eq!(when(slots::REPORT_SLOT), vec!["2026-11-30T08:00:00+00:00"]);
    assert_eq!(
        when("budget_reconciliation"),
        vec![
            "2026-11-30T07:15:00+00:00",
            "2026-12-01T07:15:00+00:00",
            "2026-12-02T07:15:00+00:00"
        ]
    );
    // Every scheduled job fires after the scheduled jobs it reads, the same day.
    assert_eq!(
        slots::order_problems(&ws, utc("2026-11-30T00:00:00Z")).unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_job_scheduled_before_its_input_is_flagged_and_time_zones_are_read() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "schedule = \"0 0 6 * * *\"\ntimezone = \"America/New_York\"\n",
    );
    write(
        fx.dir(),
        "jobs/channel_value.toml",
        &format!("schedule = \"0 0 5 * * *\"\n{CHANNEL_VALUE_TOML}"),
    );
    let ws = fx.workspace().await;
    // 06:00 in New York is 11:00 UTC in December: channel_value at 05:00 UTC fires first.
    assert_eq!(
        slots::order_problems(&ws, utc("2026-11-30T00:00:00Z")).unwrap(),
        vec!["job `channel_value` is scheduled at 05:00:00 UTC but reads `customer_value`, scheduled later that day: it would read the previous `customer_value`".to_string()]
    );
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "schedule = \"0 0 6 * * *\"\ntimezone = \"Mars/Olympus\"\n",
    );
    let err = match Project::load(fx.dir(), &Overrides::default())
        .and_then(|p| retention::app::workspace(p, Stores::default()))
    {
        Ok(_) => panic!("a bad time zone must not load"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("customer_value.toml: timezone: `Mars/Olympus` is not a time zone"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Leases race on every backend
// ---------------------------------------------------------------------------------------------

/// 16 claimers at once on one slot, then 16 again after the lease expired: exactly one wins each
/// round, with token 1 and then 2, and everyone else sees the winner's lease.
async fn suite_lease_race(backend: Backend) {
    let Some(fx) = Fixture::new(backend) else {
        return;
    };
    let slot = utc(SLOTS[0]);
    let ttl = chrono::Duration::seconds(30);
    let rounds = [
        (1, utc("2026-12-01T06:00:00Z")),
        (2, utc("2026-12-01T06:00:31Z")),
    ];
    for (token, now) in rounds {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let leases = fx.leases();
                tokio::spawn(async move {
                    leases
                        .claim("race", slot, &format!("d{token}-{i}"), now, ttl)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut claims = Vec::new();
        for t in tasks {
            claims.push(t.await.unwrap());
        }
        let won: Vec<&Lease> = claims
            .iter()
            .filter_map(|c| match c {
                Claim::Acquired(l) => Some(l),
                _ => None,
            })
            .collect();
        assert_eq!(won.len(), 1, "token {token}: {claims:?}");
        assert_eq!(won[0].token, token);
        for c in &claims {
            match c {
                Claim::Acquired(l) | Claim::Held(l) => assert_eq!(l, won[0]),
                Claim::Done(d) => panic!("no slot is done: {d:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_race_has_one_winner_in_memory() {
    suite_lease_race(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_race_has_one_winner_on_local_files() {
    suite_lease_race(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_race_has_one_winner_on_s3() {
    suite_lease_race(Backend::S3).await;
}

// ---------------------------------------------------------------------------------------------
// Racing daemons: every slot succeeds exactly once
// ---------------------------------------------------------------------------------------------

/// `n` daemons ensure `channel_value` for three slots at once; each slot of it and of the
/// `customer_value` it reads (triggered for the same slot) runs once.
async fn suite_racing_daemons(backend: Backend, n: usize) {
    let Some(fx) = Fixture::new(backend) else {
        return;
    };
    fx.write_hand_data().await;
    let daemons: Vec<Arc<Daemon>> = (0..n)
        .map(|i| fx.daemon(&format!("d{i}"), system()))
        .collect();
    for slot in SLOTS.map(utc) {
        let tasks: Vec<_> = daemons
            .iter()
            .map(|d| {
                let d = d.clone();
                tokio::spawn(async move { d.ensure("channel_value".into(), slot).await.unwrap() })
            })
            .collect();
        let mut ends = Vec::new();
        for t in tasks {
            ends.push(t.await.unwrap());
        }
        assert!(
            ends.iter()
                .all(|d| d == &ends[0] && d.outcome == "succeeded"),
            "{ends:?}"
        );
    }
    assert_eq!(
        fx.rows("select job, slot, count(*) as runs, min(attempt) as attempt from _runs where status = 'succeeded' group by job, slot").await,
        "job|slot|runs|attempt\n\
         channel_value|2026-12-01T06:00:00Z|1|1\n\
         channel_value|2026-12-02T06:00:00Z|1|1\n\
         channel_value|2026-12-03T06:00:00Z|1|1\n\
         customer_value|2026-12-01T06:00:00Z|1|1\n\
         customer_value|2026-12-02T06:00:00Z|1|1\n\
         customer_value|2026-12-03T06:00:00Z|1|1"
    );
    assert_eq!(
        fx.rows("select count(*) as other from _runs where status <> 'succeeded'")
            .await,
        "other\n0"
    );
    let per_slot =
        "2026-12-01T06:00:00+00:00=1\n2026-12-02T06:00:00+00:00=1\n2026-12-03T06:00:00+00:00=1";
    assert_eq!(fx.commits_per_slot("customer_value").await, per_slot);
    assert_eq!(fx.commits_per_slot("channel_value").await, per_slot);
    fx.assert_value_marts().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_and_five_daemons_run_each_slot_once_in_memory() {
    suite_racing_daemons(Backend::Memory, 2).await;
    suite_racing_daemons(Backend::Memory, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_and_five_daemons_run_each_slot_once_on_local_files() {
    suite_racing_daemons(Backend::Local, 2).await;
    suite_racing_daemons(Backend::Local, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_and_five_daemons_run_each_slot_once_on_s3() {
    suite_racing_daemons(Backend::S3, 2).await;
    suite_racing_daemons(Backend::S3, 5).await;
}

// ---------------------------------------------------------------------------------------------
// A holder that stopped: waited for, then taken over; a publish it made is not repeated
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_stopped_holder_is_waited_for_until_its_lease_expires_then_taken_over() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    let slot = utc(SLOTS[0]);
    let t0 = utc("2026-12-01T06:00:01Z");
    // A daemon claimed the slot and died.
    let Claim::Acquired(_) = fx
        .leases()
        .claim(
            "customer_value",
            slot,
            "dead",
            t0,
            chrono::Duration::hours(1),
        )
        .await
        .unwrap()
    else {
        panic!("first claim")
    };
    let clock = Arc::new(ManualClock::new(t0 + chrono::Duration::minutes(30)));
    let b = fx.daemon("b", clock.clone());
    let waiting = tokio::time::timeout(
        Duration::from_millis(300),
        b.ensure("customer_value".into(), slot),
    )
    .await;
    assert!(waiting.is_err(), "a live lease is waited for");
    assert_eq!(fx.version("customer_value").await, None);
    clock.set(t0 + chrono::Duration::hours(2));
    let done = b.ensure("customer_value".into(), slot).await.unwrap();
    assert_eq!(
        (done.token, done.daemon_id.as_str(), done.outcome.as_str()),
        (2, "b", "succeeded")
    );
    assert_eq!(
        fx.rows("select job, status, attempt, daemon_id from _runs")
            .await,
        "job|status|attempt|daemon_id\ncustomer_value|succeeded|2|b"
    );
}

#[tokio::test]
async fn a_holder_that_published_but_did_not_finish_is_recovered_without_a_second_publish() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    let slot = utc(SLOTS[0]);
    // Daemon a publishes, then cannot write the ledger or the done marker (it "dies").
    let (inner, _) = fx.stores.store_for(&fx.curated).unwrap();
    let broken = Stores::default();
    broken.inject(
        &Url::parse("memory:///").unwrap(),
        Arc::new(FaultyStore::refusing(inner, &["_runs", "done.json"])),
    );
    let t0 = utc("2026-12-01T06:00:01Z");
    let a = fx.daemon_on("a", Arc::new(FixedClock(t0)), broken);
    let err = a.ensure("customer_value".into(), slot).await.unwrap_err();
    assert!(err.to_string().contains("done.json"), "{err}");
    assert_eq!(fx.version("customer_value").await, Some(0));
    // Daemon b, after a's lease expired, finds the slot published and records it.
    let b = fx.daemon("b", Arc::new(FixedClock(t0 + chrono::Duration::hours(2))));
    let done = b.ensure("customer_value".into(), slot).await.unwrap();
    assert_eq!((done.token, done.outcome.as_str()), (2, "succeeded"));
    assert_eq!(
        fx.version("customer_value").await,
        Some(0),
        "not published twice"
    );
    assert_eq!(
        fx.rows("select status, attempt, daemon_id, output_version, reason from _runs")
            .await,
        "status|attempt|daemon_id|output_version|reason\n\
         succeeded|2|b|0|recovered: published by attempt 1, which did not finish the slot"
    );
}

// ---------------------------------------------------------------------------------------------
// The fence at publish
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_run_whose_lease_was_taken_over_or_whose_table_moved_publishes_nothing() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    let slot = utc(SLOTS[0]);
    let t0 = utc("2026-12-01T06:00:01Z");
    let hour = chrono::Duration::hours(1);
    let Claim::Acquired(stale) = fx
        .leases()
        .claim("customer_value", slot, "a", t0, hour)
        .await
        .unwrap()
    else {
        panic!("first claim")
    };
    let Claim::Acquired(_) = fx
        .leases()
        .claim("customer_value", slot, "b", t0 + hour * 2, hour)
        .await
        .unwrap()
    else {
        panic!("takeover")
    };
    // Daemon a (paused, its clock still within its lease) goes on to publish.
    let over = Overrides::with_storage(Some(fx.raw.to_string()), Some(fx.curated.to_string()));
    let ws_a = Arc::new(
        Workspace::load(
            retention::app::engine(Project::load(fx.dir(), &over).unwrap(), fx.stores.clone())
                .unwrap()
                .with_clock(Arc::new(FixedClock(t0 + chrono::Duration::minutes(5)))),
        )
        .unwrap(),
    );
    let fenced = |lease: Lease, base_version: Option<i64>| {
        let mut plan = ws_a
            .plan(
                &["customer_value".to_string()],
                retention::values::Trigger::Schedule,
            )
            .unwrap();
        plan.claim = Some(retention::plan::run_plan::SlotClaim {
            lease,
            base_version,
        });
        plan
    };
    let report = retention::execute::execute(ws_a.clone(), &fenced(stale, None), 1)
        .await
        .unwrap();
    assert_eq!(
        report.outcomes[0].error.as_deref(),
        Some(
            "job `customer_value` slot 2026-12-01T06:00:00+00:00: lease token 1 lost: daemon `b` took the slot over with token 2"
        )
    );
    assert_eq!(
        report.outcomes[0].failure,
        Some(retention::execute::Failure::LeaseLost)
    );
    assert_eq!(fx.version("customer_value").await, None);
    // A holder whose table moved on since it read it (someone published versions 0 and 1)
    // cannot publish onto version 0: the commit fails, as a transient lost race.
    fx.cmd(&["run", "customer_value"]).await.unwrap();
    fx.cmd(&["run", "customer_value"]).await.unwrap();
    let Claim::Acquired(fresh) = fx
        .leases()
        .claim("customer_value", utc(SLOTS[1]), "a", t0, hour)
        .await
        .unwrap()
    else {
        panic!("claim")
    };
    let report = retention::execute::execute(ws_a.clone(), &fenced(fresh, Some(0)), 1)
        .await
        .unwrap();
    let o = &report.outcomes[0];
    assert_eq!(
        o.failure,
        Some(retention::execute::Failure::Transient),
        "{o:?}"
    );
    assert!(
        o.error
            .as_deref()
            .unwrap()
            .contains("publish failed, previous version kept"),
        "{o:?}"
    );
    assert_eq!(fx.version("customer_value").await, Some(1));
}

// ---------------------------------------------------------------------------------------------
// Retries: a 503 is retried, a SQL error is not
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_503_is_retried_with_backoff_and_a_sql_error_is_not() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    write(fx.dir(), "jobs/broken.toml", "retries = 3\n");
    write(
        fx.dir(),
        "sql/broken.sql",
        "SELECT CAST(acquisition_channel AS INT) AS channel FROM customers",
    );
    let (inner, _) = fx.stores.store_for(&fx.raw).unwrap();
    let faulty = Stores::default();
    faulty.inject(
        &Url::parse("memory:///").unwrap(),
        Arc::new(FaultyStore::new(inner, "/raw/orders/dt=2026-01-05/", 2)),
    );
    let d = fx.daemon_on("d", system(), faulty);
    let slot = utc(SLOTS[0]);
    let done = d.ensure("daily_revenue".into(), slot).await.unwrap();
    assert_eq!(done.outcome, "succeeded");
    assert_eq!(
        fx.rows("select status, attempt, error like '%status code: 503%' as unavailable from _runs where job = 'daily_revenue'").await,
        "status|attempt|unavailable\nfailed|1|true\nfailed|1|true\nsucceeded|1|"
    );
    assert_eq!(fx.rows("select * from daily_revenue").await, EXPECTED_DAILY);
    let done = d.ensure("broken".into(), slot).await.unwrap();
    assert_eq!(done.outcome, "failed");
    assert_eq!(
        fx.rows("select status, error like '%Cannot cast string%' as cast_error from _runs where job = 'broken'").await,
        "status|cast_error\nfailed|true"
    );
}

// ---------------------------------------------------------------------------------------------
// Catch-up and downstream triggers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missed_slots_follow_catchup_and_a_stopped_holders_slot_is_owed() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "schedule = \"0 0 6 * * *\"\n",
    );
    let now = utc("2026-12-04T07:00:00Z");
    let d = fx.daemon("d", Arc::new(FixedClock(now)));
    let cron = JobCron::of(&d.ws.graph.node("customer_value").unwrap().spec)
        .unwrap()
        .unwrap();
    let due = |c: Catchup| {
        let (d, cron) = (d.clone(), cron.clone());
        async move {
            retention::serve::due_slots(&d, &cron, c, now)
                .await
                .unwrap()
                .iter()
                .map(|s| s.format("%m-%d").to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    // Never run by a daemon: only the newest slot is owed.
    assert_eq!(due(Catchup::None).await, "");
    assert_eq!(due(Catchup::Latest).await, "12-04");
    assert_eq!(due(Catchup::All).await, "12-04");
    // Last run on 12-01: 12-02, 12-03 and 12-04 were missed.
    let hour = chrono::Duration::hours(1);
    let leases = fx.leases();
    let Claim::Acquired(l) = leases
        .claim("customer_value", utc(SLOTS[0]), "x", now, hour)
        .await
        .unwrap()
    else {
        panic!("claim")
    };
    leases.finish(&l, "succeeded", now).await.unwrap();
    assert_eq!(due(Catchup::None).await, "");
    assert_eq!(due(Catchup::Latest).await, "12-04");
    assert_eq!(due(Catchup::All).await, "12-02,12-03,12-04");
    // A slot claimed but never finished is owed whatever the catchup.
    leases
        .claim(
            "customer_value",
            utc("2026-12-04T06:00:00Z"),
            "x",
            now,
            hour,
        )
        .await
        .unwrap();
    assert_eq!(due(Catchup::None).await, "12-04");
    assert_eq!(due(Catchup::All).await, "12-04");
}

#[tokio::test]
async fn a_job_with_trigger_downstream_starts_its_readers_for_the_same_slot() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "trigger_downstream = true\n",
    );
    let d = fx.daemon("d", system());
    let slot = utc(SLOTS[1]);
    d.ensure("customer_value".into(), slot).await.unwrap();
    d.tasks.close();
    d.tasks.wait().await;
    assert!(d.leases().is_done("channel_value", slot).await.unwrap());
    assert_eq!(
        fx.rows("select * from channel_value").await,
        EXPECTED_CHANNEL
    );
    assert_eq!(
        fx.rows("select job, slot from _runs where status = 'succeeded'")
            .await,
        "job|slot\nchannel_value|2026-12-02T06:00:00Z\ncustomer_value|2026-12-02T06:00:00Z"
    );
}

// ---------------------------------------------------------------------------------------------
// The serve loop: firings, and stopping on signals
// ---------------------------------------------------------------------------------------------

fn options(grace_ms: u64) -> retention::serve::ServeOptions {
    retention::serve::ServeOptions {
        grace: Duration::from_millis(grace_ms),
        sweep: Duration::from_secs(3600),
    }
}

/// A GET over plain HTTP/1.1: the status line and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The samples of an OpenMetrics text as Python's `prometheus_client` parser reads them, one
/// `name{labels} value` line each; `None` (skipped) without Python's prometheus_client.
fn parsed_by_prometheus_client(text: &str) -> Option<Vec<String>> {
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\nfor f in parse(sys.stdin.read()):\n    for s in f.samples:\n        labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n        print(f'{s.name}{{{labels}}} {s.value}')\n";
    let child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        skip("python3 is needed to parse /metrics");
        return None;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'prometheus_client'") {
        skip("Python's prometheus_client parses /metrics (pip install prometheus-client)");
        return None;
    }
    assert!(
        out.status.success(),
        "the parser refused /metrics: {stderr}\n{text}"
    );
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_each_firing_once_reports_over_http_and_stops_on_a_signal() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "schedule = \"* * * * * *\"\ncatchup = \"none\"\n",
    );
    let d = fx.daemon("d", system());
    let (listener, addr) = retention::serve::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let serving = tokio::spawn(retention::serve::serve(
        d,
        options(10_000),
        Some(listener),
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        http_get(addr, "/healthz").await,
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    let (status, metrics) = http_get(addr, "/metrics").await;
    let (_, runs) = http_get(addr, "/runs?limit=2").await;
    tx.send(()).await.unwrap();
    serving.await.unwrap().unwrap();
    // Every firing of customer_value ran once, and daily_revenue's newest 06:00 slot once.
    assert_eq!(
        fx.rows("select count(*) >= 2 as several, count(*) = count(distinct slot) as once, min(trigger) as trigger from _runs where status = 'succeeded' and job = 'customer_value'").await,
        "several|once|trigger\ntrue|true|schedule"
    );
    assert_eq!(
        fx.rows("select count(*) as other from _runs where status <> 'succeeded'")
            .await,
        "other\n0"
    );
    assert_eq!(
        fx.rows("select * from customer_value").await,
        EXPECTED_CUSTOMER
    );
    // /metrics: what the ledger says, read back by a Prometheus parser.
    assert_eq!(status, "HTTP/1.1 200 OK");
    let runs_before_signal: Vec<serde_json::Value> = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs_before_signal.len(), 2, "{runs}");
    assert_eq!(runs_before_signal[0]["status"], "succeeded", "{runs}");
    assert!(runs_before_signal[0]["slot"].is_string(), "{runs}");
    let Some(samples) = parsed_by_prometheus_client(&metrics) else {
        return;
    };
    let value = |name: &str| -> f64 {
        samples
            .iter()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} not in {samples:#?}"))
    };
    assert_eq!(
        value("retention_runs_total{job=daily_revenue,status=succeeded}"),
        1.0
    );
    assert_eq!(
        value("retention_rows_written_total{job=daily_revenue}"),
        2.0
    );
    let fired = value("retention_runs_total{job=customer_value,status=succeeded}");
    assert!(fired >= 2.0, "{samples:#?}");
    assert_eq!(
        value("retention_rows_written_total{job=customer_value}"),
        3.0 * fired
    );
    assert_eq!(
        value("retention_run_duration_seconds_count{job=customer_value}"),
        fired
    );
    assert!(value("retention_last_success_timestamp_seconds{job=customer_value}") > 1.7e9);
}

/// A daemon on a store whose order reads take `delay`, with one slot of daily_revenue (daily at
/// 06:00, so the start-up sweep runs its newest slot) going, and `signals` sent 300 ms in.
async fn stop_during_a_run(
    delay_ms: u64,
    grace_ms: u64,
    signals: usize,
) -> (Fixture, Result<(), Error>, Duration) {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    let (inner, _) = fx.stores.store_for(&fx.raw).unwrap();
    let slow = Stores::default();
    slow.inject(
        &Url::parse("memory:///").unwrap(),
        Arc::new(FaultyStore {
            delay: Duration::from_millis(delay_ms),
            ..FaultyStore::new(inner, "/raw/orders/", 0)
        }),
    );
    let d = fx.daemon_on("d", system(), slow);
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let started = std::time::Instant::now();
    let serving = tokio::spawn(retention::serve::serve(d, options(grace_ms), None, rx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..signals {
        tx.send(()).await.unwrap();
    }
    let result = serving.await.unwrap();
    (fx, result, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_within_the_grace_period_lets_the_run_finish_and_publish() {
    let (fx, result, _) = stop_during_a_run(300, 30_000, 1).await;
    result.unwrap();
    assert_eq!(fx.rows("select * from daily_revenue").await, EXPECTED_DAILY);
    assert_eq!(
        fx.rows("select status from _runs").await,
        "status\nsucceeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_abandons_the_run_without_publishing() {
    let (fx, result, took) = stop_during_a_run(20_000, 500, 1).await;
    result.unwrap();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(fx.version("daily_revenue").await, None);
    assert_eq!(
        fx.rows("select status, error from _runs").await,
        "status|error\nfailed|abandoned: the daemon stopped and its grace period ended"
    );
    // The slot is not finished: another daemon (or this one restarted) owes it.
    let slot = fx.leases().claimed_slots("daily_revenue").await.unwrap();
    assert!(!fx.leases().is_done("daily_revenue", slot[0]).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_aborts_at_once_without_publishing() {
    let (fx, result, took) = stop_during_a_run(20_000, 30_000, 2).await;
    let err = result.unwrap_err().to_string();
    assert_eq!(
        err,
        "schedule: aborted by a second signal: 1 run(s) abandoned without publishing"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(fx.version("daily_revenue").await, None);
}

// ---------------------------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn status_shows_last_run_next_slot_lateness_and_source_freshness() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "schedule = \"0 0 6 * * *\"\ntimezone = \"Europe/Berlin\"\n",
    );
    let sources = SOURCES.replace(
        "name = \"orders\"\npartition_columns = [\"dt\"]",
        "name = \"orders\"\npartition_columns = [\"dt\"]\nfreshness = { column = \"dt\", warn_after = \"1h\" }",
    );
    write(fx.dir(), "jobs/sources.toml", &sources);
    let now = utc("2026-12-03T09:00:00Z");
    let d = fx.daemon("d", Arc::new(FixedClock(now)));
    d.ensure("daily_revenue".into(), utc("2026-12-03T06:00:00Z"))
        .await
        .unwrap();
    let batch = retention::serve::status::status(&d.ws, now).await.unwrap();
    let rows = cells(&[batch]);
    let row = |job: &str| rows.iter().find(|r| r[0] == job).unwrap().clone();
    // daily_revenue ran its 06:00 UTC slot; next is tomorrow's; orders is ten months old.
    let daily = row("daily_revenue");
    assert_eq!(
        daily[..7],
        [
            "daily_revenue",
            "0 0 6 * * * UTC",
            "succeeded",
            "2026-12-03T09:00:00Z",
            "2026-12-03T06:00:00Z",
            "2026-12-04T06:00:00Z",
            "false"
        ]
    );
    assert!(daily[7].starts_with("orders: warn (9months "), "{daily:?}");
    // customer_value never ran: its 06:00 Berlin slot (05:00 UTC) is more than its timeout (1h)
    // overdue, so it is late.
    assert_eq!(
        row("customer_value")[..7],
        [
            "customer_value",
            "0 0 6 * * * Europe/Berlin",
            "",
            "",
            "",
            "2026-12-04T05:00:00Z",
            "true"
        ]
    );
    // channel_value has no schedule: never late, no rule on what it reads.
    assert_eq!(
        row("channel_value"),
        ["channel_value", "", "", "", "", "", "", ""]
    );
}

// ---------------------------------------------------------------------------------------------
// kill -9 of a daemon mid-run, then another daemon
// ---------------------------------------------------------------------------------------------

/// `retention serve` on the fixture's local lake: a daemon process.
fn daemon_process(fx: &Fixture, id: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_retention"))
        .args(["-C", &fx.dir().display().to_string()])
        .args(["--raw", fx.raw.as_str(), "--curated", fx.curated.as_str()])
        .args(["serve", "--no-http", "--daemon-id", id])
        .args(["--lease-margin", "1s", "--sweep", "1s", "--poll", "200ms"])
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Wait until a file under the curated root's `rel` folder has `name` in its name.
async fn wait_for_file(fx: &Fixture, rel: &str, name: &str, seconds: u64) -> bool {
    let root = fx.curated.to_file_path().unwrap().join(rel);
    for _ in 0..seconds * 20 {
        let found = walk(&root)
            .iter()
            .any(|p| p.to_string_lossy().contains(name));
        if found {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .flatten()
        .flat_map(|e| match e.path().is_dir() {
            true => walk(&e.path()),
            false => vec![e.path()],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_run_leaves_no_partial_table_and_its_slot_completes_once() {
    let fx = Fixture::new(Backend::Local).unwrap();
    // A job that takes a few seconds, with a 20 s timeout: its lease lasts 21 s.
    write(
        fx.dir(),
        "jobs/slow.toml",
        "schedule = \"0 0 6 * * *\"\ntimeout = \"20s\"\nretries = 0\n",
    );
    write(
        fx.dir(),
        "sql/slow.sql",
        "SELECT count(*) AS n, sum(v % 7) AS s FROM (SELECT unnest(range(0, 2000000)) AS v)",
    );
    for job in ["daily_revenue", "customer_value", "channel_value"] {
        std::fs::remove_file(fx.dir().join(format!("jobs/{job}.toml"))).unwrap();
    }
    let mut a = daemon_process(&fx, "a");
    assert!(
        wait_for_file(&fx, "_leases/slow", "lease-", 60).await,
        "daemon a never claimed the slot"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill().unwrap();
    a.wait().unwrap();
    assert_eq!(
        fx.version("slow").await,
        None,
        "the killed run published nothing"
    );
    // Daemon b's sweep owes the unfinished slot; it takes it over once a's lease expires.
    let mut b = daemon_process(&fx, "b");
    let finished = wait_for_file(&fx, "_leases/slow", "done.json", 120).await;
    b.kill().unwrap();
    b.wait().unwrap();
    assert!(finished, "daemon b did not finish the slot");
    assert_eq!(fx.version("slow").await, Some(0), "one commit");
    let slots = fx.leases().claimed_slots("slow").await.unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(
        fx.rows("select job, status, attempt, daemon_id from _runs")
            .await,
        "job|status|attempt|daemon_id\nslow|succeeded|2|b"
    );
    assert_eq!(fx.rows("select n from slow").await, "n\n2000000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_runs_the_missed_slots_in_order() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "schedule = \"0 0 6 * * *\"\ncatchup = \"all\"\n",
    );
    write(
        fx.dir(),
        "jobs/daily_revenue.toml",
        "catchup = \"none\"\n[params]\nfrom_day = \"2000-01-01\"\n",
    );
    let now = utc("2026-12-04T07:00:00Z");
    let leases = fx.leases();
    let Claim::Acquired(l) = leases
        .claim(
            "customer_value",
            utc(SLOTS[0]),
            "x",
            now,
            chrono::Duration::hours(1),
        )
        .await
        .unwrap()
    else {
        panic!("claim")
    };
    leases.finish(&l, "succeeded", now).await.unwrap();
    let d = fx.daemon("d", Arc::new(FixedClock(now)));
    retention::serve::sweep(&d).await.unwrap();
    d.tasks.close();
    d.tasks.wait().await;
    // One commit per missed slot, published in slot order.
    use futures::StreamExt;
    let url = curated::table_url(&fx.curated, "customer_value").unwrap();
    let t = curated::open(&fx.stores, &url).await.unwrap().unwrap();
    let mut history: Vec<(i64, String)> = t
        .history(None)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|h| {
            let h = h.unwrap();
            let slot = h
                .info
                .get(curated::SLOT_KEY)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            (h.read_version.map_or(-1, |v| v as i64), slot)
        })
        .collect();
    history.sort();
    let slots: Vec<&str> = history.iter().map(|(_, s)| &s[..10]).collect();
    assert_eq!(slots, ["2026-12-02", "2026-12-03", "2026-12-04"]);
}
