//! The shared suite: every backend (InMemory, local files, an S3-compatible server) runs the same checks.

use super::*;

async fn suite_run_publishes_expected_rows(backend: Backend) {
    let Some(fx) = Fixture::new(backend) else {
        return;
    };
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    assert_eq!(fx.rows("select * from daily_revenue").await, EXPECTED_DAILY);
    fx.assert_value_marts().await;

    // The ledger: one row per job with rows written and the input versions read.
    let runs = fx
        .rows("select job, status, rows_written, input_versions, output_version from _runs")
        .await;
    assert_eq!(
        runs,
        "job|status|rows_written|input_versions|output_version\n\
         channel_value|succeeded|2|{\"customer_value\":0}|0\n\
         customer_value|succeeded|3|{\"customers\":\"source\",\"orders\":\"source\"}|0\n\
         daily_revenue|succeeded|2|{\"orders\":\"source\"}|0"
    );
    let read = fx.rows("select job, rows_read from _runs").await;
    // Rows the scans produced: customer_value reads 3 customers + the 5 orders, daily_revenue
    // the 5 orders (files written as the generator writes them keep no min and max of strings,
    // so `status = 'completed'` skips no file and the filter drops the cancelled one after the
    // scan); channel_value scans customer_value's 3 rows twice (once for its scalar subquery).
    assert_eq!(
        read,
        "job|rows_read\nchannel_value|6\ncustomer_value|8\ndaily_revenue|5"
    );

    // A rerun on the same inputs publishes the same rows as a new version; the old one stays.
    let before = fx.snapshot().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    assert_eq!(fx.version("customer_value").await, Some(1));
    assert_eq!(
        fx.snapshot()
            .await
            .replace("v Some(1)", "v Some(0)")
            .replace("vSome(1)", "vSome(0)"),
        before
    );
    let url = curated::table_url(&fx.curated, "customer_value").unwrap();
    let v0 = curated::open_version(&fx.stores, &url, 0).await.unwrap();
    assert_eq!(v0.version(), Some(0));
}

async fn suite_overwrite_partitions_replaces_only_produced_months(backend: Backend) {
    let Some(fx) = Fixture::new(backend) else {
        return;
    };
    fx.write_hand_data().await;
    fx.cmd(&["run", "daily_revenue"]).await.unwrap();
    assert_eq!(fx.rows("select * from daily_revenue").await, EXPECTED_DAILY);

    // January's raw data goes away, February gets a late order. A backfill from February on
    // replaces February only: January's published rows stay as they were.
    fx.delete_raw("orders/dt=2026-01-05/part-0.parquet").await;
    fx.put_raw(
        "orders/dt=2026-02-15/part-0.parquet",
        parquet(&orders_batch(&[(6, 2, 1234, 34, "completed")])),
    )
    .await;
    fx.cmd(&["run", "daily_revenue", "--param", "from_day=2026-02-01"])
        .await
        .unwrap();
    assert_eq!(
        fx.rows("select * from daily_revenue").await,
        "order_month|order_day|orders|net_revenue\n\
         2026-01|2026-01-05|2|29.50\n\
         2026-02|2026-02-02|2|97.00\n\
         2026-02|2026-02-15|1|12.00"
    );
    // A full overwrite job would have dropped January: check `customer_value` does follow the data.
    fx.cmd(&["run", "customer_value"]).await.unwrap();
    assert_eq!(
        fx.rows("select * from customer_value").await,
        "customer_id|acquisition_channel|orders|net_revenue\n1|search|1|7.00\n2|social|1|12.00\n3|search|1|90.00"
    );
}

async fn suite_failed_job_skips_downstream_and_keeps_tables(backend: Backend) {
    let Some(fx) = Fixture::new(backend) else {
        return;
    };
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    let before = fx.snapshot().await;
    // A file that is not Parquet lands in the orders source.
    fx.put_raw(
        "orders/dt=2026-03-01/part-0.parquet",
        b"PAR1 this is not parquet".to_vec(),
    )
    .await;
    let err = fx.cmd(&["run", "--all"]).await.unwrap_err();
    assert_eq!(err.to_string(), "3 of 3 job(s) failed");
    assert_eq!(
        fx.snapshot().await,
        before,
        "curated tables must be untouched"
    );
    let runs = fx
        .rows("select job, status from _runs where status <> 'succeeded'")
        .await;
    // customer_value and daily_revenue read orders and fail; channel_value is skipped.
    assert_eq!(
        runs,
        "job|status\nchannel_value|skipped\ncustomer_value|failed\ndaily_revenue|failed"
    );
    let err = fx
        .rows("select error from _runs where job = 'daily_revenue' and status = 'failed'")
        .await;
    assert!(
        err.contains("orders/dt=2026-03-01/part-0.parquet") && err.contains("not readable Parquet"),
        "{err}"
    );
}

/// Publish one row (`customer_id` = `id`) over `customer_value` from an already-loaded `table`,
/// as a second writer would.
async fn overwrite_customer_value(
    ws: &Workspace,
    table: deltalake::DeltaTable,
    url: &Url,
    id: usize,
    barrier: Option<Arc<tokio::sync::Barrier>>,
) -> Result<i64, Error> {
    let ctx = ws.engine.session(&[]).unwrap();
    let plan = ctx
        .sql(&format!("SELECT CAST({id} AS BIGINT) AS customer_id, 'w' AS acquisition_channel, CAST(1 AS BIGINT) AS orders, CAST(1 AS DECIMAL(18,2)) AS net_revenue"))
        .await
        .unwrap()
        .into_unoptimized_plan();
    if let Some(b) = barrier {
        b.wait().await;
    }
    let publish = curated::Publish {
        table: "customer_value",
        url,
        mode: retention::project::spec::WriteMode::Overwrite,
        partition_by: &[],
        partitions: vec![],
        description: "",
        configuration: Default::default(),
        commit_metadata: Default::default(),
        base_version: None,
        replace_where: None,
        file_layout: &Default::default(),
        known_bytes: None,
    };
    curated::publish_to(table, Arc::new(ctx.state()), plan, publish)
        .await
        .map(|p| p.version)
}

async fn suite_racing_writers_never_share_a_version(backend: Backend) {
    let Some(fx) = Fixture::new(backend) else {
        return;
    };
    fx.write_hand_data().await;
    fx.cmd(&["run", "customer_value"]).await.unwrap();
    let url = curated::table_url(&fx.curated, "customer_value").unwrap();
    let ws = Arc::new(fx.workspace().await);
    let writers = 4;
    // Every writer loads version 0 first, then all commit at once.
    let mut stale = Vec::new();
    for _ in 0..writers {
        stale.push(curated::open(&fx.stores, &url).await.unwrap().unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(writers));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, table) in stale.into_iter().enumerate() {
        let ws = ws.clone();
        let url = url.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            (
                i,
                overwrite_customer_value(&ws, table, &url, i, Some(barrier)).await,
            )
        });
    }
    let mut winners = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (i, result) = r.unwrap();
        match result {
            Ok(v) => winners.push((v, i)),
            Err(e) => assert!(e.to_string().contains("publish failed"), "{e}"),
        }
    }
    winners.sort();
    // Every successful writer got its own version, in sequence after 0, holding its own row.
    assert!(!winners.is_empty());
    assert_eq!(
        fx.version("customer_value").await,
        Some(winners.len() as u64)
    );
    for (k, (v, i)) in winners.iter().enumerate() {
        assert_eq!(*v, k as i64 + 1);
        assert_eq!(
            rows_at_version(&fx, "customer_value", *v as u64).await,
            format!("customer_id|acquisition_channel|orders|net_revenue\n{i}|w|1|1.00")
        );
    }
}

async fn suite_concurrent_commit_fails_cleanly_and_keeps_both_versions(backend: Backend) {
    let Some(fx) = Fixture::new(backend) else {
        return;
    };
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    let url = curated::table_url(&fx.curated, "customer_value").unwrap();
    // Someone loads the table at version 0 and starts a write...
    let stale = curated::open(&fx.stores, &url).await.unwrap().unwrap();
    assert_eq!(stale.version(), Some(0));
    // ...meanwhile a run publishes version 1 of it.
    fx.cmd(&["run", "customer_value"]).await.unwrap();
    let v1 = fx.rows("select * from customer_value").await;
    // The stale writer commits an overwrite: Delta's conflict check refuses it.
    let ws = fx.workspace().await;
    let err = overwrite_customer_value(&ws, stale, &url, 99, None)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("table `customer_value` at {url}: publish failed")),
        "{msg}"
    );
    assert!(
        msg.to_lowercase().contains("conflict") || msg.to_lowercase().contains("concurrent"),
        "{msg}"
    );
    // The run's version 1 is still the latest, and version 0 still reads back.
    assert_eq!(fx.version("customer_value").await, Some(1));
    assert_eq!(fx.rows("select * from customer_value").await, v1);
    assert_eq!(
        render(
            &curated::provider(&curated::open_version(&fx.stores, &url, 0).await.unwrap())
                .await
                .map(|p| {
                    let ctx = datafusion::prelude::SessionContext::new();
                    ctx.register_table("t", p).unwrap();
                    ctx
                })
                .unwrap()
                .sql("select * from t")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap()
        ),
        EXPECTED_CUSTOMER
    );
}

/// `[close]` is plain configuration: any job can be frozen by month. A closed month stays as
/// frozen after new data arrives; a job that gets `[close]` after the close shows it live.
/// Run against every backend (the close tables are partitioned Delta appends).
async fn suite_any_job_can_be_frozen_by_month(backend: Backend) {
    let Some(fx) = Fixture::new(backend) else {
        return;
    };
    fx.write_hand_data().await;
    write(
        fx.dir(),
        "jobs/monthly_net.toml",
        "[close]\nmonth_column = \"order_month\"\n",
    );
    write(
        fx.dir(),
        "sql/monthly_net.sql",
        "SELECT substr(dt, 1, 7) AS order_month, sum(gmv - discount) AS net FROM orders WHERE status = 'completed' GROUP BY 1",
    );
    write(fx.dir(), "jobs/monthly_orders.toml", "");
    write(
        fx.dir(),
        "sql/monthly_orders.sql",
        "SELECT substr(dt, 1, 7) AS order_month, count(*) AS orders FROM orders GROUP BY 1",
    );
    fx.cmd(&["run", "monthly_net", "monthly_orders"])
        .await
        .unwrap();
    fx.cmd(&["close-month", "2026-01"]).await.unwrap();
    // A late completed order for January: 50.00.
    fx.put_raw(
        "orders/dt=2026-01-25/part-0.parquet",
        parquet(&orders_batch(&[(6, 2, 5000, 0, "completed")])),
    )
    .await;
    fx.cmd(&["run", "monthly_net", "monthly_orders"])
        .await
        .unwrap();
    assert_eq!(
        fx.rows("select * from monthly_net order by 1").await,
        "order_month|net\n2026-01|29.50\n2026-02|97.00"
    );
    assert_eq!(
        fx.rows("select * from monthly_orders order by 1").await,
        "order_month|orders\n2026-01|4\n2026-02|2"
    );
    // monthly_orders gets [close] now: January was not frozen for it, so it stays live.
    write(
        fx.dir(),
        "jobs/monthly_orders.toml",
        "[close]\nmonth_column = \"order_month\"\n",
    );
    fx.cmd(&["run", "monthly_net", "monthly_orders"])
        .await
        .unwrap();
    assert_eq!(
        fx.rows("select * from monthly_orders order by 1").await,
        "order_month|orders\n2026-01|4\n2026-02|2"
    );
    // Re-opening January (with a reason) lets the late order in.
    fx.cmd(&[
        "close-month",
        "2026-01",
        "--reopen",
        "--reason",
        "late order 6",
    ])
    .await
    .unwrap();
    assert_eq!(
        fx.rows("select * from monthly_net order by 1").await,
        "order_month|net\n2026-01|79.50\n2026-02|97.00"
    );
    // --reason is required with --reopen (a usage error before anything runs).
    let cli = Cli::try_parse_from(["retention", "close-month", "2026-01", "--reopen"]);
    assert!(cli.unwrap_err().to_string().contains("--reason"));
}

macro_rules! shared_suite {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn run_publishes_expected_rows() {
                suite_run_publishes_expected_rows($backend).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn overwrite_partitions_replaces_only_produced_months() {
                suite_overwrite_partitions_replaces_only_produced_months($backend).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_commit_fails_cleanly_and_keeps_both_versions() {
                suite_concurrent_commit_fails_cleanly_and_keeps_both_versions($backend).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_writers_never_share_a_version() {
                suite_racing_writers_never_share_a_version($backend).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn failed_job_skips_downstream_and_keeps_tables() {
                suite_failed_job_skips_downstream_and_keeps_tables($backend).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn any_job_can_be_frozen_by_month() {
                suite_any_job_can_be_frozen_by_month($backend).await
            }
        }
    };
}

shared_suite!(memory, Backend::Memory);
shared_suite!(local, Backend::Local);
shared_suite!(s3, Backend::S3);
