//! Incremental jobs: the first run and a rebuild give the same rows, so do daily runs over a
//! year, a late row is picked up by the lookback, a failed day is found and filled, and a changed
//! SQL rebuilds the table unless `--forward-only`.

use chrono::Datelike;

use super::*;

pub(super) const INCREMENTAL_TOML: &str = "kind = \"incremental\"
time_column = \"order_day\"
grain = \"day\"
lookback = 2
start = \"2026-01-01\"
";

/// Net revenue of completed orders per day: the incremental job reads `$start`..`$end`, its
/// full twin reads everything.
const DAILY_SQL: &str = "SELECT CAST(dt AS DATE) AS order_day, count(*) AS orders,
       sum(gmv - discount) AS net_revenue
FROM orders
WHERE status = 'completed'";

pub(super) fn write_jobs(fx: &Fixture, incremental_toml: &str) {
    write(fx.dir(), "jobs/daily_orders.toml", incremental_toml);
    write(
        fx.dir(),
        "sql/daily_orders.sql",
        &format!(
            "{DAILY_SQL}\n  AND CAST(dt AS DATE) >= $start AND CAST(dt AS DATE) < $end\nGROUP BY 1"
        ),
    );
    write(
        fx.dir(),
        "jobs/daily_orders_full.toml",
        "description = \"The same, rebuilt.\"\n",
    );
    write(
        fx.dir(),
        "sql/daily_orders_full.sql",
        &format!("{DAILY_SQL}\nGROUP BY 1"),
    );
}

/// Orders of `day` (the n-th day of 2026): a few completed, one cancelled on every fifth day.
async fn put_day(fx: &Fixture, day: chrono::NaiveDate, extra: i64) {
    let n = day.ordinal() as i64;
    let mut rows = vec![
        (n * 10, 1, 1000 + i128::from(n as i32), 100, "completed"),
        (n * 10 + 1, 2, 2500, i128::from((n % 7) as i32), "completed"),
    ];
    if n % 5 == 0 {
        rows.push((n * 10 + 2, 3, 9999, 0, "cancelled"));
    }
    if extra > 0 {
        rows = (0..extra)
            .map(|e| (n * 10 + 3 + e, 3, 123, 0, "completed"))
            .collect();
    }
    fx.put_raw(
        &format!("orders/dt={day}/part-{extra}.parquet"),
        parquet(&orders_batch(&rows)),
    )
    .await;
}

pub(super) fn day(s: &str) -> chrono::NaiveDate {
    s.parse().unwrap()
}

pub(super) async fn run_as_of(fx: &Fixture, job: &str, as_of: chrono::NaiveDate) {
    fx.cmd(&["run", job, "--as-of", &as_of.to_string()])
        .await
        .unwrap();
}

/// The last run of daily_orders: the days it computed.
async fn last_interval(fx: &Fixture) -> String {
    fx.rows("select interval_start, interval_end from _runs where job = 'daily_orders' order by started_at desc limit 1")
        .await
}

/// A fixture with the incremental job at `lookback` and `days` days of orders from 2026-01-01.
pub(super) async fn with_days(lookback: u32, days: usize) -> Fixture {
    let fx = Fixture::new(Backend::Memory).unwrap();
    write_jobs(
        &fx,
        &INCREMENTAL_TOML.replace("lookback = 2", &format!("lookback = {lookback}")),
    );
    for d in day("2026-01-01").iter_days().take(days) {
        put_day(&fx, d, 0).await;
    }
    fx
}

/// The run as of `as_of` fails on a broken orders file, which is then removed.
async fn fail_run(fx: &Fixture, as_of: &str) {
    let broken = format!("orders/dt={as_of}/part-9.parquet");
    fx.put_raw(&broken, b"PAR1 broken".to_vec()).await;
    fx.cmd(&["run", "daily_orders", "--as-of", as_of])
        .await
        .unwrap_err();
    fx.delete_raw(&broken).await;
}

#[tokio::test]
async fn a_year_of_daily_runs_gives_the_rows_of_one_rebuild() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    write_jobs(&fx, INCREMENTAL_TOML);
    let first = day("2026-01-01");
    let days: Vec<chrono::NaiveDate> = first.iter_days().take(365).collect();
    for d in &days {
        put_day(&fx, *d, 0).await;
    }
    // The first run is a rebuild through its as-of day: the same rows as the full job.
    run_as_of(&fx, "daily_orders", day("2026-03-31")).await;
    run_as_of(&fx, "daily_orders_full", day("2026-03-31")).await;
    assert_eq!(
        last_interval(&fx).await,
        "interval_start|interval_end\n2026-01-01|2026-04-01"
    );
    let full_to_march = fx
        .rows("select * from daily_orders_full where order_day < '2026-04-01'")
        .await;
    assert_eq!(fx.rows("select * from daily_orders").await, full_to_march);
    // Then every day of the year, one run each: only the new day and the lookback.
    let ws = Arc::new(fx.workspace().await);
    for d in days.iter().skip(90) {
        let plan = ws
            .plan_as_of(
                &["daily_orders".to_string()],
                retention::values::Trigger::Schedule,
                Some(retention::values::AsOf::Day(*d)),
            )
            .unwrap();
        let report = retention::execute::execute(ws.clone(), &plan, 1)
            .await
            .unwrap();
        assert_eq!(report.failed(), 0, "{d}: {:?}", report.outcomes);
    }
    assert_eq!(
        last_interval(&fx).await,
        "interval_start|interval_end\n2026-12-29|2027-01-01"
    );
    run_as_of(&fx, "daily_orders_full", day("2026-12-31")).await;
    let full = fx.rows("select * from daily_orders_full").await;
    assert_eq!(
        full.lines().count(),
        1 + 365,
        "a row per day of 2026, and the hand data's 3 days"
    );
    assert_eq!(
        fx.rows("select * from daily_orders").await,
        fx.rows("select * from daily_orders_full where order_day >= '2026-01-01'")
            .await
    );
    assert_eq!(
        fx.rows("select count(*) as runs, sum(rows_written) as rows from _runs where job = 'daily_orders'").await,
        "runs|rows\n276|915",
        "the first run wrote 90 days, each later run its day and the 2 before it (90 + 3 * 275)"
    );
}

#[tokio::test]
async fn a_late_row_is_picked_up_by_the_lookback_and_a_failed_day_is_filled() {
    let fx = with_days(2, 10).await;
    run_as_of(&fx, "daily_orders", day("2026-01-08")).await;
    // A late order for the 7th arrives after the 8th was computed; the 9th's run (lookback 2)
    // recomputes the 7th.
    put_day(&fx, day("2026-01-07"), 1).await;
    run_as_of(&fx, "daily_orders", day("2026-01-09")).await;
    assert_eq!(
        last_interval(&fx).await,
        "interval_start|interval_end\n2026-01-07|2026-01-10"
    );
    assert_eq!(
        fx.rows("select order_day, orders from daily_orders where order_day = '2026-01-07'")
            .await,
        "order_day|orders\n2026-01-07|3"
    );
    // The 10th's run fails (a broken file); the 11th's run starts from the 10th, and 2 days
    // before it: their late rows may have arrived while the 10th was missing.
    fail_run(&fx, "2026-01-10").await;
    put_day(&fx, day("2026-01-11"), 0).await;
    run_as_of(&fx, "daily_orders", day("2026-01-11")).await;
    assert_eq!(
        last_interval(&fx).await,
        "interval_start|interval_end\n2026-01-08|2026-01-12"
    );
    assert_eq!(
        fx.rows("select count(*) as days, min(order_day) as first, max(order_day) as last from daily_orders").await,
        "days|first|last\n11|2026-01-01|2026-01-11"
    );
}

#[tokio::test]
async fn a_gap_older_than_the_lookback_is_found_in_the_ledger() {
    let fx = with_days(0, 8).await;
    run_as_of(&fx, "daily_orders", day("2026-01-03")).await;
    fail_run(&fx, "2026-01-04").await;
    // Nobody noticed for two days: the 6th's run computes from the 4th.
    run_as_of(&fx, "daily_orders", day("2026-01-06")).await;
    assert_eq!(
        last_interval(&fx).await,
        "interval_start|interval_end\n2026-01-04|2026-01-07"
    );
    assert_eq!(
        fx.rows("select count(*) as days from daily_orders").await,
        "days\n6"
    );
}

#[tokio::test]
async fn a_changed_sql_rebuilds_unless_forward_only() {
    let fx = with_days(0, 8).await;
    run_as_of(&fx, "daily_orders", day("2026-01-05")).await;
    run_as_of(&fx, "daily_orders", day("2026-01-06")).await;
    assert_eq!(
        last_interval(&fx).await,
        "interval_start|interval_end\n2026-01-06|2026-01-07"
    );
    let sql_path = fx.dir().join("sql/daily_orders.sql");
    let sql = std::fs::read_to_string(&sql_path).unwrap();
    std::fs::write(&sql_path, format!("-- reviewed\n{sql}")).unwrap();
    fx.cmd(&[
        "run",
        "daily_orders",
        "--as-of",
        "2026-01-07",
        "--forward-only",
    ])
    .await
    .unwrap();
    assert_eq!(
        last_interval(&fx).await,
        "interval_start|interval_end\n2026-01-07|2026-01-08"
    );
    run_as_of(&fx, "daily_orders", day("2026-01-08")).await;
    assert_eq!(
        last_interval(&fx).await,
        "interval_start|interval_end\n2026-01-01|2026-01-09"
    );
    assert_eq!(
        fx.rows("select count(*) as days from daily_orders").await,
        "days\n8"
    );
}

#[tokio::test]
async fn incremental_specs_are_checked() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    write_jobs(
        &fx,
        "kind = \"incremental\"\ngrain = \"month\"\nstart = \"2026-01-15\"\n",
    );
    let err = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        err.contains("daily_orders.toml: time_column: required by `kind = \"incremental\"`"),
        "{err}"
    );
    let misaligned = INCREMENTAL_TOML
        .replace("grain = \"day\"", "grain = \"month\"")
        .replace("2026-01-01", "2026-01-15");
    write_jobs(&fx, &misaligned);
    let err = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        err.contains("daily_orders.toml: start: `2026-01-15` must be the first day of a month"),
        "{err}"
    );
    write_jobs(&fx, &INCREMENTAL_TOML.replace("order_day", "orders"));
    let err = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        err.contains(
            "time_column `orders` must be an output column of type DATE or string (found Int64)"
        ),
        "{err}"
    );
    write_jobs(&fx, "time_column = \"order_day\"\n");
    let err = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        err.contains(
            "kind: time_column, grain, lookback and start are for `kind = \"incremental\"`"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn state_modified_selects_jobs_whose_spec_or_sql_changed_since_their_last_success() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    // Nothing has succeeded yet: every job is modified.
    fx.cmd(&["run", "state:modified"]).await.unwrap();
    let count = "select job, count(*) as runs from _runs group by job";
    assert_eq!(
        fx.rows(count).await,
        "job|runs\nchannel_value|1\ncustomer_value|1\ndaily_revenue|1"
    );
    // Nothing changed: nothing runs.
    fx.cmd(&["run", "state:modified"]).await.unwrap();
    assert_eq!(
        fx.rows(count).await,
        "job|runs\nchannel_value|1\ncustomer_value|1\ndaily_revenue|1"
    );
    // customer_value's SQL changes: it alone, or with its downstream.
    let sql_path = fx.dir().join("sql/customer_value.sql");
    let sql = std::fs::read_to_string(&sql_path).unwrap();
    std::fs::write(&sql_path, format!("-- one comment more\n{sql}")).unwrap();
    fx.cmd(&["run", "state:modified+"]).await.unwrap();
    assert_eq!(
        fx.rows(count).await,
        "job|runs\nchannel_value|2\ncustomer_value|2\ndaily_revenue|1"
    );
    fx.cmd(&["run", "state:modified"]).await.unwrap();
    assert_eq!(
        fx.rows(count).await,
        "job|runs\nchannel_value|2\ncustomer_value|2\ndaily_revenue|1"
    );
}

#[tokio::test]
async fn a_backfill_gives_the_daily_rows_and_resumes_where_it_failed() {
    let fx = with_days(2, 20).await;
    // A check refuses a day of more than 10 orders; the 10th has 12: that interval fails, the
    // others go on (three at a time).
    let checked = format!(
        "{INCREMENTAL_TOML}[[checks]]\nname = \"at_most_10_orders\"\nsql = \"SELECT * FROM daily_orders WHERE orders > 10\"\n"
    );
    write(fx.dir(), "jobs/daily_orders.toml", &checked);
    put_day(&fx, day("2026-01-10"), 10).await;
    let backfill = [
        "backfill",
        "daily_orders",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-20",
    ];
    let err = fx
        .cmd(&[&backfill[..], &["--parallel", "3"]].concat())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "job `daily_orders`: backfill: 1 of 20 interval(s) failed; run the same backfill again to resume"
    );
    assert_eq!(
        fx.rows(
            "select status, count(*) as runs, min(trigger) as trigger from _runs group by status"
        )
        .await,
        "status|runs|trigger\nfailed|1|backfill\nsucceeded|19|backfill"
    );
    // Fixed, the same backfill runs the 10th alone.
    fx.delete_raw("orders/dt=2026-01-10/part-10.parquet").await;
    fx.cmd(&backfill).await.unwrap();
    assert_eq!(
        fx.rows("select interval_start, interval_end from _runs where status = 'succeeded' order by started_at desc limit 1").await,
        "interval_start|interval_end\n2026-01-10|2026-01-11"
    );
    assert_eq!(
        fx.rows("select count(*) as runs from _runs").await,
        "runs\n21"
    );
    run_as_of(&fx, "daily_orders_full", day("2026-01-20")).await;
    assert_eq!(
        fx.rows("select * from daily_orders").await,
        fx.rows("select * from daily_orders_full").await
    );
    // Run once more: it is complete; --only-missing over a wider range runs the new days only.
    fx.cmd(&backfill).await.unwrap();
    assert_eq!(
        fx.rows("select count(*) as runs from _runs where job = 'daily_orders'")
            .await,
        "runs\n21"
    );
    fx.cmd(&[
        "backfill",
        "daily_orders",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-22",
        "--only-missing",
    ])
    .await
    .unwrap();
    assert_eq!(
        fx.rows("select count(*) as runs from _runs where job = 'daily_orders'")
            .await,
        "runs\n23"
    );
    let err = fx
        .cmd(&[
            "backfill",
            "daily_orders_full",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-02",
        ])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("daily_orders_full: is not incremental"),
        "{err}"
    );
}

#[tokio::test]
async fn an_incremental_job_as_of_latest_waits_for_the_table_latest_is_read_from() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    write_jobs(&fx, INCREMENTAL_TOML);
    write(
        fx.dir(),
        "retention.toml",
        "[as_of]\nlatest_table = \"daily_revenue\"\nlatest_column = \"order_day\"\n",
    );
    let ws = fx.workspace().await;
    let selected = vec!["daily_revenue".to_string(), "daily_orders".to_string()];
    let plan = ws
        .plan(&selected, retention::values::Trigger::Manual)
        .unwrap();
    let waits: Vec<&str> = plan.jobs[1]
        .upstream_in_run
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        (plan.jobs[1].name.as_str(), waits),
        ("daily_orders", vec!["daily_revenue"])
    );
    // In one run, `latest` is read after daily_revenue published: its newest completed day.
    fx.cmd(&["run", "daily_revenue", "daily_orders"])
        .await
        .unwrap();
    assert_eq!(
        last_interval(&fx).await,
        "interval_start|interval_end\n2026-01-01|2026-02-03"
    );
}

#[tokio::test]
async fn a_backfill_dry_run_runs_nothing_and_with_downstream_rebuilds_the_readers() {
    let fx = with_days(2, 5).await;
    write(
        fx.dir(),
        "jobs/order_days.toml",
        "description = \"Days and orders.\"\n",
    );
    write(
        fx.dir(),
        "sql/order_days.sql",
        "SELECT count(*) AS days, sum(orders) AS orders FROM daily_orders",
    );
    let args = [
        "backfill",
        "daily_orders",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-05",
    ];
    fx.cmd(&[&args[..], &["--dry-run", "--with-downstream"]].concat())
        .await
        .unwrap();
    assert_eq!(
        fx.version("daily_orders").await,
        None,
        "a dry run writes nothing"
    );
    fx.cmd(&[&args[..], &["--with-downstream"]].concat())
        .await
        .unwrap();
    assert_eq!(
        fx.rows("select job, trigger, count(*) as runs from _runs group by job, trigger")
            .await,
        "job|trigger|runs\ndaily_orders|backfill|5\norder_days|backfill|1"
    );
    // Two completed orders a day over five days.
    assert_eq!(
        fx.rows("select * from order_days").await,
        "days|orders\n5|10"
    );
}

/// The project's marts on a generated lake extended one day at a time (`generate --through`),
/// run on some nights, with a pause longer than the lookback, equal one rebuild of the final
/// lake; a nightly run of order_experience recomputes only the new day and its 40-day lookback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_runs_on_a_lake_extended_day_by_day_equal_a_rebuild() {
    use retention::generate::{GenerateOptions, extend, generate};
    let opts = GenerateOptions {
        seed: 5,
        customers: 1_200,
        months: 4,
        ..Default::default()
    };
    let lake = TempDir::new().unwrap();
    let raw = Url::from_directory_path(lake.path().join("raw")).unwrap();
    let workspace = |curated: &str| {
        let curated = Url::from_directory_path(lake.path().join(curated)).unwrap();
        let over = Overrides::with_storage(Some(raw.to_string()), Some(curated.to_string()));
        let project = Project::load(Path::new(env!("CARGO_MANIFEST_DIR")), &over).unwrap();
        Arc::new(retention::app::workspace(project, Stores::default()).unwrap())
    };
    let marts = ["+fulfillment_sla", "cohort_retention", "churn_rate"];
    let stores = Stores::default();
    generate(&stores, &raw, &opts, Some(day("2024-12-15")))
        .await
        .unwrap();
    let nightly = workspace("nightly");
    run_jobs(&nightly, &marts).await;
    // A night, then 46 nights without a run (more than the lookback: the late rows for the days
    // before them land meanwhile), then a night that catches up, then one more.
    for night in ["2024-12-16", "2025-02-01", "2025-02-02"] {
        extend(&stores, &raw, day(night)).await.unwrap();
        run_jobs(&nightly, &marts).await;
    }
    let ctx = nightly.query_session().await.unwrap();
    let last = rows_of(
        &ctx,
        "SELECT CAST(interval_start AS VARCHAR), CAST(interval_end AS VARCHAR), rows_written
         FROM _runs WHERE job = 'order_experience' ORDER BY started_at DESC LIMIT 1",
    )
    .await
    .remove(0);
    // The last night is 2025-02-02: that day and the 40 before it.
    assert_eq!(
        last[..2],
        ["2024-12-24".to_string(), "2025-02-03".to_string()]
    );
    // It wrote exactly the orders of those days, fewer than the table holds.
    let counts = rows_of(
        &ctx,
        "SELECT count(*) FILTER (WHERE order_date >= DATE '2024-12-24'), count(*)
         FROM order_experience",
    )
    .await
    .remove(0);
    assert_eq!(last[2], counts[0]);
    assert!(counts[0].parse::<u64>().unwrap() < counts[1].parse::<u64>().unwrap());
    // Partitioned by month, more coarsely than its daily grain: a reader sees the partition
    // column with its own type, and December's days before the interval were kept.
    let december = rows_of(
        &ctx,
        "SELECT arrow_typeof(order_month), count(*) FROM order_experience
         WHERE order_month = '2024-12' AND order_date < DATE '2024-12-24' GROUP BY 1",
    )
    .await
    .remove(0);
    assert_eq!(december[0], "Utf8");
    assert!(december[1].parse::<u64>().unwrap() > 0);

    let rebuilt = workspace("rebuilt");
    run_jobs(&rebuilt, &marts).await;
    let rebuilt_ctx = rebuilt.query_session().await.unwrap();
    for table in [
        "order_experience",
        "fulfillment_sla",
        "cohort_retention",
        "churn_rate",
    ] {
        let sql = format!("SELECT * FROM {table}");
        let (mut a, mut b) = (rows_of(&ctx, &sql).await, rows_of(&rebuilt_ctx, &sql).await);
        a.sort();
        b.sort();
        assert!(a.len() > 10, "{table}: {} rows", a.len());
        assert_eq!(a, b, "{table}");
    }
}

/// A source file's footer is checked when a job reads it: a broken file in a day the night's
/// interval does not read leaves the incremental job alone, and fails the full job that reads
/// every day, naming the file.
#[tokio::test]
async fn the_contract_is_checked_on_the_files_a_job_reads() {
    let fx = with_days(2, 10).await;
    run_as_of(&fx, "daily_orders", day("2026-01-08")).await;
    fx.put_raw(
        "orders/dt=2026-01-02/part-9.parquet",
        b"PAR1 broken".to_vec(),
    )
    .await;
    run_as_of(&fx, "daily_orders", day("2026-01-09")).await;
    assert_eq!(
        last_interval(&fx).await,
        "interval_start|interval_end\n2026-01-07|2026-01-10"
    );
    fx.cmd(&["run", "daily_orders_full", "--as-of", "2026-01-09"])
        .await
        .unwrap_err();
    let error = fx
        .rows("select error from _runs where job = 'daily_orders_full'")
        .await;
    assert!(
        error.contains("orders/dt=2026-01-02/part-9.parquet")
            && error.contains("is not readable Parquet"),
        "{error}"
    );
}
