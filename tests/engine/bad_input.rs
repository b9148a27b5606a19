//! Bad input: each gives a clear message, and curated data stays as it was.

use super::*;
use crate::stores::FaultyStore;

#[tokio::test]
async fn bad_project_url_and_missing_value() {
    let (fx, before) = published().await;
    write(
        fx.dir(),
        "retention.toml",
        "[storage]\nraw = \"ftp://host/raw\"\ncurated = \"  \"\n",
    );
    // Flags would override the file: run without them.
    let cli = Cli::try_parse_from([
        "retention",
        "-C",
        &fx.dir().display().to_string(),
        "validate",
    ])
    .unwrap();
    let err = run(cli, fx.stores.clone()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("retention.toml: storage.raw: `ftp://host/raw`: unsupported scheme `ftp`"),
        "{msg}"
    );
    assert!(msg.contains("storage.curated: missing value"), "{msg}");
    assert_eq!(retention::cli::exit_code(&err), 2);
    assert_eq!(fx.snapshot().await, before);
}

/// Publish the hand data, replace one project file with `text`, run `args`: the error contains
/// every `expected` piece and no curated table changed.
async fn bad_file(rel: &str, text: &str, args: &[&str], expected: &[&str]) {
    let (fx, before) = published().await;
    write(fx.dir(), rel, text);
    let msg = expect_error(&fx, args, &before).await;
    for piece in expected {
        assert!(msg.contains(piece), "expected `{piece}` in: {msg}");
    }
}

#[tokio::test]
async fn unknown_datafusion_setting_fails() {
    bad_file(
        "retention.toml",
        "[datafusion]\n\"execution.batch_sise\" = 10\n",
        &["run", "--all"],
        &["datafusion.execution.batch_sise"],
    )
    .await;
}

#[tokio::test]
async fn unknown_field_in_spec() {
    bad_file(
        "jobs/channel_value.toml",
        "tags = []\nshedule = \"0 0 6 * * *\"\n",
        &["run", "--all"],
        &["jobs/channel_value.toml:2:1: unknown field `shedule`"],
    )
    .await;
}

#[tokio::test]
async fn bad_cron() {
    bad_file(
        "jobs/channel_value.toml",
        "schedule = \"0 6 * * *\"\n[params]\nmin_orders = 2\n",
        &["validate"],
        &["channel_value.toml: schedule: `0 6 * * *` is not a valid schedule"],
    )
    .await;
}

#[tokio::test]
async fn sql_syntax_error_has_file_line_column() {
    // `GROUP` without `BY` ends the statement early: the parser points at `GROUP`.
    bad_file(
        "sql/channel_value.sql",
        "SELECT acquisition_channel,\n  count(*) AS customers\nFROM customer_value\nGROUP acquisition_channel",
        &["run", "--all"],
        &["sql/channel_value.sql:4:1: job `channel_value`", "found: GROUP"],
    )
    .await;
}

#[tokio::test]
async fn cyclic_dependency() {
    bad_file(
        "sql/customer_value.sql",
        "SELECT acquisition_channel AS customer_id FROM channel_value",
        &["run", "--all"],
        &["cyclic dependency between jobs: channel_value -> customer_value -> channel_value"],
    )
    .await;
}

#[tokio::test]
async fn duplicate_output_column() {
    bad_file(
        "sql/customer_value.sql",
        "SELECT c.customer_id, o.customer_id AS \"Customer_Id\" FROM customers c JOIN orders o USING (customer_id)",
        &["validate"],
        &["job `customer_value`: ", "duplicate column name `Customer_Id`"],
    )
    .await;
}

#[tokio::test]
async fn unknown_table_and_unknown_column_reported_together() {
    let (fx, before) = published().await;
    write(
        fx.dir(),
        "sql/channel_value.sql",
        "SELECT acquisition_channel, count(*) AS n FROM customer_valu GROUP BY 1",
    );
    write(
        fx.dir(),
        "sql/customer_value.sql",
        "SELECT customer_id,\n       chanel AS channel\nFROM customers",
    );
    // The unknown table is found while building the graph (before any SQL is planned).
    let msg = expect_error(&fx, &["validate"], &before).await;
    assert!(
        msg.contains("job `channel_value` reads unknown table `customer_valu`"),
        "{msg}"
    );
    // Fix the table; validate now plans the SQL and finds the column, with its position.
    write(
        fx.dir(),
        "sql/channel_value.sql",
        "SELECT count(*) AS n FROM customer_value",
    );
    let msg = expect_error(&fx, &["validate"], &before).await;
    assert!(
        msg.contains("sql/customer_value.sql:2:8: job `customer_value`"),
        "{msg}"
    );
    assert!(msg.contains("chanel"), "{msg}");
}

#[tokio::test]
async fn validate_reports_all_problems_at_once() {
    let (fx, before) = published().await;
    write(
        fx.dir(),
        "sql/channel_value.sql",
        "SELECT nope FROM customer_value",
    );
    write(
        fx.dir(),
        "sql/daily_revenue.sql",
        "SELECT order_month, FROM orders",
    );
    let msg = expect_error(&fx, &["validate"], &before).await;
    assert!(msg.starts_with("2 problem(s)"), "{msg}");
    assert!(msg.contains("sql/channel_value.sql:1:8"), "{msg}");
    assert!(msg.contains("sql/daily_revenue.sql:1:"), "{msg}");
}

#[tokio::test]
async fn source_files_missing() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.put_raw("customers/part-0.parquet", parquet(&customers_batch()))
        .await;
    let msg = expect_error(
        &fx,
        &["run", "customer_value"],
        "daily_revenue vNone\ncustomer_value vNone\nchannel_value vNone\n",
    )
    .await;
    assert_eq!(msg, "1 of 1 job(s) failed");
    let err = fx.rows("select error from _runs").await;
    assert!(
        err.contains("source `orders`: source files missing: no .parquet files under memory:///"),
        "{err}"
    );
}

#[tokio::test]
async fn truncated_parquet_names_the_file() {
    let mut bytes = parquet(&orders_batch(&[(7, 1, 100, 0, "completed")]));
    bytes.truncate(bytes.len() / 2);
    broken_orders_partition(
        "2026-02-20",
        bytes,
        &[
            "orders/dt=2026-02-20/part-0.parquet",
            "not readable Parquet",
        ],
    )
    .await;
}

#[tokio::test]
async fn contract_break_names_table_column_expected_found_and_file() {
    // gmv arrives as a float in one partition.
    let gmv = Arc::new(datafusion::arrow::array::Float64Array::from(vec![9.99]));
    broken_orders_partition(
        "2026-02-21",
        parquet(&orders_with_column("gmv", gmv)),
        &[
            "source `orders`: column `gmv`: expected decimal(18,2) (Decimal128(18, 2)) but found Float64 in file",
            "dt=2026-02-21/part-0.parquet",
        ],
    )
    .await;
}

#[tokio::test]
async fn store_that_refuses_writes() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    let before = fx.snapshot().await;
    // From now on the curated prefix refuses every write.
    let (inner, _) = fx.stores.store_for(&fx.raw).unwrap();
    let refusing = Fixture {
        stores: Stores::default(),
        ..fx
    };
    refusing.stores.inject(
        &Url::parse("memory:///").unwrap(),
        Arc::new(FaultyStore::refusing(inner.clone(), &["/curated/"])),
    );
    let err = refusing.cmd(&["run", "--all"]).await.unwrap_err();
    // Every job fails to publish, and the ledger cannot be written either.
    assert_eq!(err.to_string(), "3 of 3 job(s) failed");
    let readable = Fixture {
        stores: Stores::default(),
        ..refusing
    };
    readable
        .stores
        .inject(&Url::parse("memory:///").unwrap(), inner);
    assert_eq!(readable.snapshot().await, before);
}

/// A query that fails while its result is written (a cast no row can take) is reported as the
/// job's query error, not as the writer's publish failure, and nothing is published.
#[tokio::test]
async fn a_query_failing_mid_write_is_named_as_the_query() {
    let (fx, before) = published().await;
    write(
        fx.dir(),
        "sql/daily_revenue.sql",
        "SELECT substr(dt, 1, 7) AS order_month, CAST(status AS BIGINT) AS orders FROM orders",
    );
    write(fx.dir(), "jobs/daily_revenue.toml", "description = \"d\"\n");
    let err = expect_error(&fx, &["run", "daily_revenue"], &before).await;
    assert_eq!(err, "1 of 1 job(s) failed");
    let msg = fx
        .rows("select error from _runs where status = 'failed'")
        .await;
    assert!(
        msg.contains("job `daily_revenue`: ") && msg.contains("Cannot cast string 'completed'"),
        "{msg}"
    );
    assert!(!msg.contains("publish failed"), "{msg}");
}
