//! Integration tests of the job engine: one shared suite run against every backend (InMemory,
//! local files, an S3-compatible server), every kind of bad input, commit conflicts, a crash
//! test that SIGKILLs runs, and an independent reader (Python `deltalake`).

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use datafusion::arrow::array::{
    ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use retention::cli::{Cli, run};
use retention::config::{Overrides, Project};
use retention::runner::Workspace;
use retention::session::Engine;
use retention::storage::Stores;
use retention::{Error, curated};
use tempfile::TempDir;
use url::Url;

// ---------------------------------------------------------------------------------------------
// The test project: three jobs over hand-made data whose results were worked out by hand.
// ---------------------------------------------------------------------------------------------

const SOURCES: &str = r#"
[[source]]
name = "customers"
columns = [
  { name = "customer_id", type = "bigint", nullable = false },
  { name = "signup_ts", type = "timestamptz", nullable = false },
  { name = "acquisition_channel", type = "string", nullable = false },
]

[[source]]
name = "orders"
partition_columns = ["dt"]
columns = [
  { name = "order_id", type = "bigint", nullable = false },
  { name = "customer_id", type = "bigint", nullable = false },
  { name = "gmv", type = "decimal(18,2)", nullable = false },
  { name = "discount", type = "decimal(18,2)", nullable = false },
  { name = "status", type = "string", nullable = false },
]
"#;

const DAILY_REVENUE_TOML: &str = r#"
description = "Net revenue of completed orders per day."
schedule = "0 0 6 * * *"
tags = ["finance"]
[output]
partition_by = ["order_month"]
mode = "overwrite_partitions"
[params]
from_day = "2000-01-01"
"#;

const DAILY_REVENUE_SQL: &str = "SELECT substr(dt, 1, 7) AS order_month, dt AS order_day,
       count(*) AS orders, sum(gmv - discount) AS net_revenue
FROM orders
WHERE status = 'completed' AND dt >= $from_day
GROUP BY dt";

const CUSTOMER_VALUE_SQL: &str = "SELECT c.customer_id, c.acquisition_channel,
       count(o.order_id) AS orders,
       coalesce(sum(o.gmv - o.discount), CAST(0 AS DECIMAL(18,2))) AS net_revenue
FROM customers c
LEFT JOIN orders o ON o.customer_id = c.customer_id AND o.status = 'completed'
GROUP BY c.customer_id, c.acquisition_channel";

const CHANNEL_VALUE_TOML: &str = "tags = [\"marts\"]\n[params]\nmin_orders = 2\n";

const CHANNEL_VALUE_SQL: &str = "SELECT acquisition_channel, count(*) AS customers,
       sum(CASE WHEN orders >= $min_orders THEN 1 ELSE 0 END) AS repeaters,
       sum(net_revenue) AS net_revenue
FROM customer_value
WHERE orders >= (SELECT min(orders) FROM customer_value) -- a scalar subquery: the plan's root is not the row count
GROUP BY acquisition_channel";

/// Expected rows, worked out by hand from `write_hand_data`.
const EXPECTED_DAILY: &str = "\
order_month|order_day|orders|net_revenue
2026-01|2026-01-05|2|29.50
2026-02|2026-02-02|2|97.00";
const EXPECTED_CUSTOMER: &str = "\
customer_id|acquisition_channel|orders|net_revenue
1|search|2|16.00
2|social|1|20.50
3|search|1|90.00";
const EXPECTED_CHANNEL: &str = "\
acquisition_channel|customers|repeaters|net_revenue
search|2|1|106.00
social|1|0|20.50";

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn write_project(dir: &Path) {
    write(dir, "jobs/sources.toml", SOURCES);
    write(dir, "jobs/daily_revenue.toml", DAILY_REVENUE_TOML);
    write(dir, "sql/daily_revenue.sql", DAILY_REVENUE_SQL);
    write(
        dir,
        "jobs/customer_value.toml",
        "description = \"Value per customer.\"\n",
    );
    write(dir, "sql/customer_value.sql", CUSTOMER_VALUE_SQL);
    write(dir, "jobs/channel_value.toml", CHANNEL_VALUE_TOML);
    write(dir, "sql/channel_value.sql", CHANNEL_VALUE_SQL);
}

fn money(values: &[i128]) -> ArrayRef {
    Arc::new(
        Decimal128Array::from(values.to_vec())
            .with_precision_and_scale(18, 2)
            .unwrap(),
    )
}

fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("gmv", DataType::Decimal128(18, 2), false),
        Field::new("discount", DataType::Decimal128(18, 2), false),
        Field::new("status", DataType::Utf8, false),
    ]))
}

/// (order_id, customer_id, gmv cents, discount cents, status)
fn orders_batch(rows: &[(i64, i64, i128, i128, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        orders_schema(),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            money(&rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            money(&rows.iter().map(|r| r.3).collect::<Vec<_>>()),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn customers_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new(
            "signup_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("acquisition_channel", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    1_767_571_200_000_000,
                    1_768_867_200_000_000,
                    1_769_990_400_000_000,
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec!["search", "social", "search"])),
        ],
    )
    .unwrap()
}

fn parquet(batch: &RecordBatch) -> Vec<u8> {
    retention::generate::parquet_bytes(batch.schema(), std::slice::from_ref(batch)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Backends and the fixture.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Local,
    S3,
}

struct Fixture {
    project: TempDir,
    _lake: Option<TempDir>,
    stores: Stores,
    raw: Url,
    curated: Url,
}

/// Skip a test that needs something this machine lacks; under CI (which provides everything)
/// a skip is a failure.
fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide this: {reason}"
    );
    println!("skipped: {reason}");
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Fixture {
    /// A project on `backend`; `None` (with the reason printed) when the backend is unavailable.
    fn new(backend: Backend) -> Option<Fixture> {
        let project = TempDir::new().unwrap();
        write_project(project.path());
        let stores = Stores::default();
        let unique = format!(
            "t{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let (lake, raw, curated) = match backend {
            Backend::Memory => {
                let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
                stores.inject(&Url::parse("memory:///").unwrap(), store);
                (
                    None,
                    format!("memory:///{unique}/raw/"),
                    format!("memory:///{unique}/curated/"),
                )
            }
            Backend::Local => {
                let lake = TempDir::new().unwrap();
                let raw = Url::from_directory_path(lake.path().join("raw"))
                    .unwrap()
                    .to_string();
                let curated = Url::from_directory_path(lake.path().join("curated"))
                    .unwrap()
                    .to_string();
                (Some(lake), raw, curated)
            }
            Backend::S3 => {
                let Ok(bucket) = std::env::var("RETENTION_TEST_S3_BUCKET") else {
                    skip(
                        "S3 backend needs RETENTION_TEST_S3_BUCKET and AWS_ENDPOINT (.ci/run starts moto)",
                    );
                    return None;
                };
                (
                    None,
                    format!("s3://{bucket}/{unique}/raw/"),
                    format!("s3://{bucket}/{unique}/curated/"),
                )
            }
        };
        Some(Fixture {
            project,
            _lake: lake,
            stores,
            raw: Url::parse(&raw).unwrap(),
            curated: Url::parse(&curated).unwrap(),
        })
    }

    fn dir(&self) -> &Path {
        self.project.path()
    }

    /// Put bytes at `rel` under the raw root.
    async fn put_raw(&self, rel: &str, bytes: Vec<u8>) {
        let (store, root) = self.stores.store_for(&self.raw).unwrap();
        let mut path = root;
        for part in rel.split('/') {
            path = path.join(part);
        }
        store.put(&path, PutPayload::from(bytes)).await.unwrap();
    }

    async fn delete_raw(&self, rel: &str) {
        let (store, root) = self.stores.store_for(&self.raw).unwrap();
        let mut path = root;
        for part in rel.split('/') {
            path = path.join(part);
        }
        store.delete(&path).await.unwrap();
    }

    /// The hand-made data set behind the EXPECTED_* rows.
    async fn write_hand_data(&self) {
        self.put_raw("customers/part-0.parquet", parquet(&customers_batch()))
            .await;
        self.put_raw(
            "orders/dt=2026-01-05/part-0.parquet",
            parquet(&orders_batch(&[
                (1, 1, 1000, 100, "completed"),
                (2, 2, 2050, 0, "completed"),
            ])),
        )
        .await;
        self.put_raw(
            "orders/dt=2026-01-20/part-0.parquet",
            parquet(&orders_batch(&[(3, 1, 525, 0, "cancelled")])),
        )
        .await;
        self.put_raw(
            "orders/dt=2026-02-02/part-0.parquet",
            parquet(&orders_batch(&[
                (4, 3, 10000, 1000, "completed"),
                (5, 1, 775, 75, "completed"),
            ])),
        )
        .await;
    }

    fn cli(&self, args: &[&str]) -> Cli {
        let mut argv = vec![
            "retention".to_string(),
            "-C".into(),
            self.dir().display().to_string(),
            "--raw".into(),
            self.raw.to_string(),
            "--curated".into(),
            self.curated.to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        Cli::try_parse_from(argv).unwrap()
    }

    /// Run a command in-process on this fixture's stores.
    async fn cmd(&self, args: &[&str]) -> Result<(), Error> {
        run(self.cli(args), self.stores.clone()).await
    }

    async fn workspace(&self) -> Workspace {
        let over = Overrides {
            raw: Some(self.raw.to_string()),
            curated: Some(self.curated.to_string()),
            ..Default::default()
        };
        let project = Project::load(self.dir(), &over).unwrap();
        Workspace::load(Engine::new(project, self.stores.clone()).unwrap()).unwrap()
    }

    /// Rows of a query over the curated tables (read straight from Delta, without the project's
    /// files, which some tests break on purpose) as sorted `a|b|c` lines under a header.
    async fn rows(&self, sql: &str) -> String {
        let over = Overrides {
            raw: Some(self.raw.to_string()),
            curated: Some(self.curated.to_string()),
            ..Default::default()
        };
        let project =
            Project::from_raw(self.dir(), Path::new("-"), Default::default(), &over).unwrap();
        let engine = Engine::new(project, self.stores.clone()).unwrap();
        let mut tables = Vec::new();
        for t in [
            "daily_revenue",
            "customer_value",
            "channel_value",
            "fx_summary",
            "ledger_totals",
            "monthly_net",
            "monthly_orders",
            "_runs",
            "_month_close",
        ] {
            let url = curated::table_url(&self.curated, t).unwrap();
            if let Some(table) = curated::open(&self.stores, &url).await.unwrap() {
                tables.push((t.to_string(), curated::provider(&table).await.unwrap()));
            }
        }
        let ctx = engine.session(&tables).unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        render(&batches)
    }

    /// Latest version of a curated table, `None` if unpublished.
    async fn version(&self, table: &str) -> Option<u64> {
        let url = curated::table_url(&self.curated, table).unwrap();
        curated::open(&self.stores, &url)
            .await
            .unwrap()
            .and_then(|t| t.version())
    }

    /// The whole curated state: every table's version and sorted rows.
    async fn snapshot(&self) -> String {
        let mut out = String::new();
        for t in ["daily_revenue", "customer_value", "channel_value"] {
            out.push_str(&format!("{t} v{:?}\n", self.version(t).await));
            if self.version(t).await.is_some() {
                out.push_str(&self.rows(&format!("select * from {t}")).await);
                out.push('\n');
            }
        }
        out
    }
}

/// Render batches as a header line plus sorted `|`-separated rows.
fn render(batches: &[RecordBatch]) -> String {
    let Some(first) = batches.first() else {
        return String::new();
    };
    let header: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut lines: Vec<String> = cells(batches).iter().map(|row| row.join("|")).collect();
    lines.sort();
    format!("{}\n{}", header.join("|"), lines.join("\n"))
}

// ---------------------------------------------------------------------------------------------
// The shared suite: every backend runs the same checks.
// ---------------------------------------------------------------------------------------------

async fn suite_run_publishes_expected_rows(backend: Backend) {
    let Some(fx) = Fixture::new(backend) else {
        return;
    };
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    assert_eq!(fx.rows("select * from daily_revenue").await, EXPECTED_DAILY);
    assert_eq!(
        fx.rows("select * from customer_value").await,
        EXPECTED_CUSTOMER
    );
    assert_eq!(
        fx.rows("select * from channel_value").await,
        EXPECTED_CHANNEL
    );

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
    // Rows the scans produced, after the filters pushed into them: customer_value reads 3
    // customers + 4 completed orders; daily_revenue the 4 completed orders; channel_value scans
    // customer_value's 3 rows twice (once for its scalar subquery).
    assert_eq!(
        read,
        "job|rows_read\nchannel_value|6\ncustomer_value|7\ndaily_revenue|4"
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
        mode: retention::spec::WriteMode::Overwrite,
        partition_by: &[],
        partitions: vec![],
        description: "",
        configuration: Default::default(),
        commit_metadata: Default::default(),
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

// ---------------------------------------------------------------------------------------------
// Bad input: each gives a clear message, and curated data stays as it was.
// ---------------------------------------------------------------------------------------------

/// A fixture with the hand data published once, and its curated state.
async fn published() -> (Fixture, String) {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    let snap = fx.snapshot().await;
    (fx, snap)
}

async fn expect_error(fx: &Fixture, args: &[&str], before: &str) -> String {
    let err = fx.cmd(args).await.unwrap_err();
    assert_eq!(
        fx.snapshot().await,
        before,
        "curated tables changed after: {err}"
    );
    err.to_string()
}

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

/// Hand-made orders (ids from 8) with column `name` replaced by `values`, whose type and
/// nullability may break the contract.
fn orders_with_column(name: &str, values: ArrayRef) -> RecordBatch {
    let rows: Vec<(i64, i64, i128, i128, &str)> = (0..values.len())
        .map(|i| {
            (
                8 + i as i64,
                1 + i as i64,
                100 * (i as i128 + 1),
                0,
                "completed",
            )
        })
        .collect();
    let base = orders_batch(&rows);
    let index = base.schema().index_of(name).unwrap();
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[index] = Field::new(name, values.data_type().clone(), values.null_count() > 0);
    let mut columns = base.columns().to_vec();
    columns[index] = values;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// Publish the hand data, land `bytes` as the orders partition of `day`, and run
/// `daily_revenue`: it fails, no curated table changes, and its ledger error has every piece.
async fn broken_orders_partition(day: &str, bytes: Vec<u8>, expected: &[&str]) {
    let (fx, before) = published().await;
    fx.put_raw(&format!("orders/dt={day}/part-0.parquet"), bytes)
        .await;
    expect_error(&fx, &["run", "daily_revenue"], &before).await;
    let err = fx
        .rows("select error from _runs where status = 'failed'")
        .await;
    for piece in expected {
        assert!(err.contains(piece), "expected `{piece}` in: {err}");
    }
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
        Arc::new(RefusingStore {
            inner: inner.clone(),
            needle: "/curated/",
        }),
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

#[tokio::test]
async fn plan_lists_order_inputs_and_dot() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    let ws = fx.workspace().await;
    let selected = ws.graph.select(&["+channel_value".into()], false).unwrap();
    let plan = ws.plan(&selected, "manual").unwrap();
    let text = plan.render();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("  1. customer_value -> memory:///")
            && lines[0].ends_with("<- [source:customers, source:orders]"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("  2. channel_value -> ")
            && lines[1].ends_with("(overwrite) <- [customer_value]"),
        "{text}"
    );
    let dot = ws.graph.to_dot(&selected);
    assert!(
        dot.contains("\"customer_value\" -> \"channel_value\";"),
        "{dot}"
    );
    assert_eq!(
        ws.graph.select(&["tag:finance".into()], false).unwrap(),
        vec!["daily_revenue"]
    );
}

#[tokio::test]
async fn explain_and_query_and_vacuum() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    // Explain works before anything is published (upstream planned from its schema).
    fx.cmd(&["explain", "channel_value"]).await.unwrap();
    fx.cmd(&["runs"]).await.unwrap();
    fx.cmd(&["run", "--all"]).await.unwrap();
    fx.cmd(&["explain", "channel_value"]).await.unwrap();
    fx.cmd(&["runs", "--job", "channel_value", "--format", "json"])
        .await
        .unwrap();
    fx.cmd(&["query", "--format", "csv", "select * from channel_value"])
        .await
        .unwrap();
    fx.cmd(&["run", "--all"]).await.unwrap();
    // Version 0's files are replaced by version 1; vacuum with no retention removes them.
    let files_before = count_files(&fx).await;
    fx.cmd(&["vacuum", "customer_value", "--retention-hours", "0"])
        .await
        .unwrap();
    assert!(count_files(&fx).await < files_before);
    assert_eq!(
        fx.rows("select * from customer_value").await,
        EXPECTED_CUSTOMER
    );
}

async fn count_files(fx: &Fixture) -> usize {
    use futures::TryStreamExt;
    let url = curated::table_url(&fx.curated, "customer_value").unwrap();
    let (store, path) = fx.stores.store_for(&url).unwrap();
    let all: Vec<_> = store.list(Some(&path)).try_collect().await.unwrap();
    all.iter()
        .filter(|m| m.location.as_ref().ends_with(".parquet"))
        .count()
}

// ---------------------------------------------------------------------------------------------
// Test stores.
// ---------------------------------------------------------------------------------------------

/// Refuses every write under a prefix: an object store that says no.
#[derive(Debug)]
struct RefusingStore {
    inner: Arc<dyn ObjectStore>,
    /// Writes to paths containing this are refused.
    needle: &'static str,
}

impl std::fmt::Display for RefusingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefusingStore")
    }
}

impl RefusingStore {
    fn check(&self, location: &StorePath) -> object_store::Result<()> {
        if location.as_ref().contains(self.needle) {
            return Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "write refused by test store".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for RefusingStore {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &StorePath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<StorePath>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<StorePath>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&StorePath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&StorePath>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }
    async fn rename_opts(
        &self,
        from: &StorePath,
        to: &StorePath,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.check(to)?;
        self.inner.rename_opts(from, to, options).await
    }
}

// ---------------------------------------------------------------------------------------------
// Crash test: SIGKILL the real binary at random points of a run, many times.
// ---------------------------------------------------------------------------------------------

const CURATED_TABLES: [&str; 3] = ["daily_revenue", "customer_value", "channel_value"];

/// The second data set: changes every table's rows, within the same months.
async fn write_changed_data(fx: &Fixture) {
    fx.put_raw(
        "orders/dt=2026-01-05/part-0.parquet",
        parquet(&orders_batch(&[
            (1, 1, 1100, 100, "completed"),
            (2, 2, 2050, 0, "completed"),
            (9, 3, 500, 0, "completed"),
        ])),
    )
    .await;
    fx.put_raw(
        "orders/dt=2026-02-02/part-0.parquet",
        parquet(&orders_batch(&[
            (4, 3, 10000, 1000, "completed"),
            (5, 1, 775, 75, "cancelled"),
        ])),
    )
    .await;
}

fn run_binary(fx: &Fixture) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_retention"));
    cmd.args([
        "-C",
        &fx.dir().display().to_string(),
        "--raw",
        fx.raw.as_str(),
        "--curated",
        fx.curated.as_str(),
        "run",
        "--all",
    ])
    .env("RUST_LOG", "off")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    cmd
}

/// Each curated table's version and rows.
async fn table_states(fx: &Fixture) -> Vec<(Option<u64>, String)> {
    let mut out = Vec::new();
    for t in CURATED_TABLES {
        let v = fx.version(t).await;
        let rows = if v.is_some() {
            fx.rows(&format!("select * from {t}")).await
        } else {
            String::new()
        };
        out.push((v, rows));
    }
    out
}

async fn rows_at_version(fx: &Fixture, table: &str, version: u64) -> String {
    let url = curated::table_url(&fx.curated, table).unwrap();
    let t = curated::open_version(&fx.stores, &url, version as i64)
        .await
        .unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("t", curated::provider(&t).await.unwrap())
        .unwrap();
    render(
        &ctx.sql("select * from t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_exposes_partial_tables() {
    use rand::{Rng, SeedableRng};
    // Expected contents of each data set, from uninterrupted runs in a reference lake.
    let reference = Fixture::new(Backend::Local).unwrap();
    reference.write_hand_data().await;
    assert!(run_binary(&reference).status().unwrap().success());
    let expected_old: Vec<String> = table_states(&reference)
        .await
        .into_iter()
        .map(|s| s.1)
        .collect();
    write_changed_data(&reference).await;
    let clock = std::time::Instant::now();
    assert!(run_binary(&reference).status().unwrap().success());
    let run_ms = clock.elapsed().as_millis() as u64;
    let expected_new: Vec<String> = table_states(&reference)
        .await
        .into_iter()
        .map(|s| s.1)
        .collect();
    assert_ne!(expected_old, expected_new);

    let fx = Fixture::new(Backend::Local).unwrap();
    fx.write_hand_data().await;
    assert!(run_binary(&fx).status().unwrap().success());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261124);
    let kills = 40;
    let mut completed_tables = 0;
    for i in 0..kills {
        // Alternate the data so every kill sits between two different contents.
        let expected_now = if i % 2 == 0 {
            write_changed_data(&fx).await;
            &expected_new
        } else {
            fx.write_hand_data().await;
            &expected_old
        };
        let before = table_states(&fx).await;
        let delay = rng.random_range(0..run_ms.max(50) * 5 / 4);
        let mut child = run_binary(&fx).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let after = table_states(&fx).await;
        for (k, t) in CURATED_TABLES.iter().enumerate() {
            let (v_before, rows_before) = &before[k];
            let (v_after, rows_after) = &after[k];
            // The previous version still reads back exactly.
            assert_eq!(
                &rows_at_version(&fx, t, v_before.unwrap()).await,
                rows_before,
                "kill {i} after {delay} ms: {t} v{v_before:?} changed"
            );
            // The latest version is either the old rows or the complete new rows.
            if v_after == v_before {
                assert_eq!(
                    rows_after, rows_before,
                    "kill {i}: {t} changed without a new version"
                );
            } else {
                completed_tables += 1;
                assert_eq!(
                    rows_after, &expected_now[k],
                    "kill {i} after {delay} ms: {t} v{v_after:?} is not the complete new result"
                );
            }
        }
    }
    // The rerun publishes exactly what an uninterrupted run does.
    write_changed_data(&fx).await;
    assert!(run_binary(&fx).status().unwrap().success());
    let final_rows: Vec<String> = table_states(&fx).await.into_iter().map(|s| s.1).collect();
    assert_eq!(final_rows, expected_new);
    println!(
        "{kills} kills over a {run_ms} ms run; {completed_tables} table publishes completed before a kill"
    );
}

// ---------------------------------------------------------------------------------------------
// Independent readers and credentials.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn python_deltalake_reads_what_query_returns() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import deltalake, pyarrow"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        skip("needs python3 with the deltalake and pyarrow packages (.ci/run installs them)");
        return;
    }
    let fx = Fixture::new(Backend::Local).unwrap();
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    fx.cmd(&["run", "customer_value"]).await.unwrap(); // a second version: readers must pick the latest
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/read_delta.py");
    for t in CURATED_TABLES {
        let url = curated::table_url(&fx.curated, t).unwrap();
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(url.to_file_path().unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let python = String::from_utf8(out.stdout).unwrap();
        assert_eq!(python, fx.rows(&format!("select * from {t}")).await, "{t}");
    }
}

#[tokio::test]
async fn credentials_never_appear_in_errors_or_logs() {
    let Ok(_) = std::env::var("RETENTION_TEST_S3_BUCKET") else {
        skip("needs the S3 test server (.ci/run starts moto)");
        return;
    };
    let fx = Fixture::new(Backend::Memory).unwrap();
    let secret = "Sup3rS3cretValueForTheTest";
    for level in ["info", "trace"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_retention"))
            .args([
                "-C",
                &fx.dir().display().to_string(),
                "--raw",
                "s3://no-such-bucket-for-retention/raw/",
            ])
            .args([
                "--curated",
                "s3://no-such-bucket-for-retention/curated/",
                "--log-format",
                "json",
                "run",
                "--all",
            ])
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_SESSION_TOKEN", "SessionTok3nForTheTest")
            .env("RUST_LOG", level)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            all.contains("no-such-bucket-for-retention"),
            "the error should name the location: {all}"
        );
        assert!(
            !all.contains(secret) && !all.contains("SessionTok3nForTheTest"),
            "secret leaked at RUST_LOG={level}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// CSV sources and table properties.
// ---------------------------------------------------------------------------------------------

const FX_SOURCE: &str = r#"
[[source]]
name = "fx_rates"
format = "csv"
columns = [
  { name = "month", type = "string", nullable = false },
  { name = "currency", type = "string", nullable = false },
  { name = "rate_to_reporting", type = "decimal(18,8)", nullable = false },
]
"#;

#[tokio::test]
async fn csv_source_reads_exact_decimals_and_checks_its_header() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    write(
        fx.dir(),
        "jobs/sources.toml",
        &format!("{SOURCES}{FX_SOURCE}"),
    );
    write(
        fx.dir(),
        "jobs/fx_summary.toml",
        "description = \"FX per currency\"\n",
    );
    write(
        fx.dir(),
        "sql/fx_summary.sql",
        "SELECT currency, count(*) AS months, sum(rate_to_reporting) AS rate_sum FROM fx_rates GROUP BY currency",
    );
    fx.put_raw(
        "fx_rates/2026.csv",
        b"month,currency,rate_to_reporting\n2026-01,EUR,1.08123456\n2026-02,EUR,1.09000001\n2026-01,GBP,1.27000000\n".to_vec(),
    )
    .await;
    fx.cmd(&["run", "fx_summary"]).await.unwrap();
    let url = curated::table_url(&fx.curated, "fx_summary").unwrap();
    assert_eq!(
        rows_at_version(&fx, "fx_summary", 0).await,
        "currency|months|rate_sum\nEUR|2|2.17123457\nGBP|1|1.27000000"
    );
    // History is kept for time travel as the project file says (defaults: 30 days, 168 hours).
    let table = curated::open(&fx.stores, &url).await.unwrap().unwrap();
    let config = table.snapshot().unwrap().metadata().configuration().clone();
    assert_eq!(
        config.get("delta.logRetentionDuration").map(String::as_str),
        Some("interval 30 days")
    );
    assert_eq!(
        config
            .get("delta.deletedFileRetentionDuration")
            .map(String::as_str),
        Some("interval 168 hours")
    );

    // Bad CSV files break the contract with file and line; nothing is published.
    let cases: [(&[u8], &str, &str); 2] = [
        // A header that lost a column.
        (
            b"month,rate_to_reporting\n2027-01,1.1\n",
            "source `fx_rates`: column `currency`: expected it as CSV column 2 but the header has `rate_to_reporting` in file",
            "fx_rates/2027.csv (line 1)",
        ),
        // A non-numeric amount in a row.
        (
            b"month,currency,rate_to_reporting\n2027-01,EUR,1.1\n2027-02,EUR,n/a\n",
            "source `fx_rates`: column `rate_to_reporting`: expected decimal(18,8) but found `n/a` in file",
            "fx_rates/2027.csv (line 3)",
        ),
    ];
    for (i, (body, message, place)) in cases.into_iter().enumerate() {
        if i > 0 {
            fx.delete_raw("fx_rates/2027.csv").await;
        }
        fx.put_raw("fx_rates/2027.csv", body.to_vec()).await;
        let err = fx.cmd(&["run", "fx_summary"]).await.unwrap_err();
        assert_eq!(err.to_string(), "1 of 1 job(s) failed");
        let msg = fx
            .rows(
                "select error from _runs where status = 'failed' order by started_at desc limit 1",
            )
            .await;
        assert!(msg.contains(message) && msg.contains(place), "{msg}");
        let table = curated::open(&fx.stores, &url).await.unwrap().unwrap();
        assert_eq!(table.version(), Some(0));
    }
}

#[tokio::test]
async fn curated_files_are_zstd_parquet_with_statistics() {
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    use futures::TryStreamExt;
    let (fx, _) = published().await;
    let url = curated::table_url(&fx.curated, "customer_value").unwrap();
    let (store, path) = fx.stores.store_for(&url).unwrap();
    let files: Vec<_> = store.list(Some(&path)).try_collect().await.unwrap();
    let data: Vec<_> = files
        .iter()
        .filter(|m| m.location.as_ref().ends_with(".parquet"))
        .collect();
    assert!(!data.is_empty());
    for meta in data {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let reader = SerializedFileReader::new(bytes).unwrap();
        let rg = reader.metadata().row_group(0);
        for c in rg.columns() {
            assert!(
                matches!(c.compression(), Compression::ZSTD(_)),
                "{:?}",
                c.compression()
            );
            assert!(
                c.statistics().is_some(),
                "column {} has no statistics",
                c.column_path()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The project's own jobs: SQL unit tests (tests/sql/*.slt) on hand-made rows.
// ---------------------------------------------------------------------------------------------

/// The repository's project, on in-memory stores (the SQL tests read no files).
fn repository_workspace() -> Arc<Workspace> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let over = Overrides {
        raw: Some("memory:///raw/".into()),
        curated: Some("memory:///curated/".into()),
        ..Default::default()
    };
    let project = Project::load(root, &over).unwrap();
    Arc::new(Workspace::load(Engine::new(project, Stores::default()).unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_sql_unit_tests_pass() {
    let ws = repository_workspace();
    let files =
        retention::sqltest::test_files(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql")])
            .unwrap();
    // Every job has its SQL test file.
    for node in &ws.graph.nodes {
        let name = format!("{}.slt", node.spec.name);
        assert!(
            files.iter().any(|f| f.ends_with(&name)),
            "job `{}` has no tests/sql/{name}",
            node.spec.name
        );
    }
    let mut failures = Vec::new();
    for f in &files {
        if let Err(e) = retention::sqltest::run_file(ws.clone(), f, false).await {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expected_row_fails_the_sql_test() {
    let ws = repository_workspace();
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("wrong.slt");
    write(
        dir.path(),
        "wrong.slt",
        "statement ok\nINSERT INTO orders VALUES (1, 1, '2026-01-05T10:00:00Z', 'north', 'home', 40.00, 0.00, 0.00, NULL, 'completed', '2026-01-05')\n\n\
         statement ok\nRUN JOB order_experience\n\nquery IR\nSELECT order_id, net_revenue FROM order_experience\n----\n1 41.00\n",
    );
    let err = retention::sqltest::run_file(ws.clone(), &file, false)
        .await
        .unwrap_err();
    assert!(err.contains("1 40.00"), "{err}");
    // --complete rewrites the expectation from the actual rows, after which the file passes.
    retention::sqltest::run_file(ws.clone(), &file, true)
        .await
        .unwrap();
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("----\n1 40.00")
    );
    retention::sqltest::run_file(ws, &file, false)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// End to end: the marts recover what the generator planted.
// ---------------------------------------------------------------------------------------------

/// Tolerance for a ratio of two binomial rates estimated from (x1 of n1) and (x0 of n0): four
/// standard errors of the log ratio (delta method), plus `bias` for known model effects.
fn log_ratio_tolerance(x1: f64, n1: f64, x0: f64, n0: f64, bias: f64) -> f64 {
    let (r1, r0) = (x1 / n1, x0 / n0);
    4.0 * ((1.0 - r1) / (n1 * r1) + (1.0 - r0) / (n0 * r0)).sqrt() + bias
}

async fn rows_of(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<Vec<String>> {
    cells(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// Every cell of `batches` as Arrow displays it, row by row.
fn cells(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            out.push(
                (0..b.num_columns())
                    .map(|c| {
                        datafusion::arrow::util::display::array_value_to_string(b.column(c), r)
                            .unwrap()
                    })
                    .collect(),
            );
        }
    }
    out
}

/// Run `selectors` (every job when empty) in one run; every job must succeed.
async fn run_jobs(ws: &Arc<Workspace>, selectors: &[&str]) {
    let selectors: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
    let selected = ws.graph.select(&selectors, selectors.is_empty()).unwrap();
    let plan = ws.plan(&selected, "test").unwrap();
    retention::runner::execute(ws.clone(), &plan, 2)
        .await
        .unwrap()
        .into_result()
        .unwrap();
}

/// The finance jobs with everything they read: the reconciliation (with its entries) and the
/// exceptions, which no other finance job reads.
const FINANCE_JOBS: &[&str] = &["+budget_reconciliation", "reconciliation_exceptions"];

/// The repository's project over a marketplace generated with `opts` into a temporary local
/// lake, after running `selectors` (every job when empty).
async fn generated_lake(
    opts: retention::generate::GenerateOptions,
    selectors: &[&str],
) -> (TempDir, Arc<Workspace>, retention::generate::Generated) {
    let lake = TempDir::new().unwrap();
    let raw = Url::from_directory_path(lake.path().join("raw")).unwrap();
    let curated_root = Url::from_directory_path(lake.path().join("curated")).unwrap();
    let over = Overrides {
        raw: Some(raw.to_string()),
        curated: Some(curated_root.to_string()),
        ..Default::default()
    };
    let project = Project::load(Path::new(env!("CARGO_MANIFEST_DIR")), &over).unwrap();
    let stores = Stores::default();
    let generated = retention::generate::generate(&stores, &raw, &opts)
        .await
        .unwrap();
    let ws = Arc::new(Workspace::load(Engine::new(project, stores).unwrap()).unwrap());
    run_jobs(&ws, selectors).await;
    (lake, ws, generated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_marketplace_marts_recover_planted_truth() {
    let opts = retention::generate::GenerateOptions {
        seed: 7,
        customers: 40_000,
        ..Default::default()
    };
    let (_lake, ws, generated) = generated_lake(opts, &[]).await;
    let truth = &generated.truth;
    let ctx = ws.query_session().await.unwrap();

    // 1. Exact: the retention curve per channel (active and eligible customers, months 0-12).
    for (channel, active) in &truth.retention_active {
        let eligible = &truth.retention_eligible[channel];
        let rows = rows_of(
            &ctx,
            &format!(
                "SELECT months_since_first, sum(active_customers), sum(cohort_size) FROM cohort_retention
                 WHERE acquisition_channel = '{channel}' AND months_since_first <= 12
                 GROUP BY months_since_first ORDER BY months_since_first"
            ),
        )
        .await;
        for (k, row) in rows.iter().enumerate() {
            assert_eq!(
                (
                    row[1].parse::<u64>().unwrap(),
                    row[2].parse::<u64>().unwrap()
                ),
                (active[k], eligible[k]),
                "{channel} month {k}"
            );
        }
        assert_eq!(rows.len(), 13, "{channel}");
    }

    // 2. Exact: settled completed orders by primary issue.
    let settled_before = chrono::NaiveDate::parse_from_str(&truth.end, "%Y-%m-%d").unwrap()
        + chrono::Duration::days(1)
        - chrono::Duration::days(retention::generate::SETTLED_DAYS);
    let rows = rows_of(
        &ctx,
        &format!(
            "SELECT primary_issue, count(*) FROM order_experience
             WHERE NOT is_cancelled AND order_ts < TIMESTAMP '{settled_before}T00:00:00Z' GROUP BY primary_issue"
        ),
    )
    .await;
    let by_issue: std::collections::BTreeMap<String, u64> = rows
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(by_issue, truth.orders_by_issue);

    // 3. Exact money control totals.
    let totals = rows_of(
        &ctx,
        "SELECT (SELECT sum(gmv) FROM orders), (SELECT sum(amount) FROM refunds)",
    )
    .await;
    assert_eq!(
        (totals[0][0].as_str(), totals[0][1].as_str()),
        (truth.gmv_total.as_str(), truth.refund_total.as_str())
    );
    for p in &truth.programs {
        let spend = rows_of(
            &ctx,
            &format!(
                "SELECT sum(marketing_spend), sum(redeemed_voucher_value) FROM program_roi WHERE program_id = {}",
                p.program_id
            ),
        )
        .await;
        assert_eq!(
            spend[0][0], p.marketing_spend,
            "program {} marketing spend",
            p.program_id
        );
        assert_eq!(
            spend[0][1], p.voucher_value_redeemed,
            "program {} redeemed vouchers",
            p.program_id
        );
    }

    // 4. Bad-experience effects: lift of each first-order issue against perfect first orders.
    //    Expected: the ratio of the planted mean return probabilities. The 90-day window starts at
    //    the first order while the next order follows the felt outcome, which comes up to about
    //    ten days later for returns than for perfect orders: at most a 4% lower lift (log 0.05).
    let rows = rows_of(&ctx, "SELECT first_order_experience, customers_observed, repeat_customers_90d FROM churn_root_cause").await;
    let groups: std::collections::BTreeMap<String, (f64, f64)> = rows
        .into_iter()
        .map(|r| (r[0].clone(), (r[2].parse().unwrap(), r[1].parse().unwrap())))
        .collect();
    let (x0, n0) = groups["perfect"];
    let p0 = truth.first_order_groups["none"].mean_return_probability;
    let mut report_lines = Vec::new();
    for issue in [
        "lost_parcel",
        "returned",
        "refunded",
        "late_delivery",
        "support_contact",
        "low_rating",
    ] {
        let (x1, n1) = groups[issue];
        let measured = (x1 / n1) / (x0 / n0);
        let planted = truth.first_order_groups[issue].mean_return_probability / p0;
        let tol = log_ratio_tolerance(x1, n1, x0, n0, 0.05);
        report_lines.push(format!(
            "{issue}: lift {measured:.3}, planted {planted:.3}, tolerance ±{tol:.3} (log)"
        ));
        assert!(
            (measured.ln() - planted.ln()).abs() <= tol,
            "{issue}: measured lift {measured:.4}, planted {planted:.4}, log tolerance {tol:.4}"
        );
    }

    // 5. Recovery: compensated against uncompensated recovery, per issue type. Both arms share
    //    the timing, so no bias allowance.
    let rows = rows_of(
        &ctx,
        "SELECT issue_type, compensated, sum(repurchased_90d), sum(cases_observed_90d) FROM experience_recovery GROUP BY issue_type, compensated",
    )
    .await;
    let cell = |issue: &str, comp: &str| {
        let r = rows.iter().find(|r| r[0] == issue && r[1] == comp).unwrap();
        (r[2].parse::<f64>().unwrap(), r[3].parse::<f64>().unwrap())
    };
    for issue in [
        "lost_parcel",
        "returned",
        "refunded",
        "late_delivery",
        "support_contact",
        "low_rating",
    ] {
        let (x1, n1) = cell(issue, "true");
        let (x0, n0) = cell(issue, "false");
        let measured = (x1 / n1) / (x0 / n0);
        let planted = truth.recovery_groups[&format!("{issue}/compensated")]
            .mean_return_probability
            / truth.recovery_groups[&format!("{issue}/uncompensated")].mean_return_probability;
        let tol = log_ratio_tolerance(x1, n1, x0, n0, 0.0);
        report_lines.push(format!(
            "recovery {issue}: {measured:.3}, planted {planted:.3}, tolerance ±{tol:.3}"
        ));
        assert!(
            (measured.ln() - planted.ln()).abs() <= tol,
            "recovery {issue}: measured {measured:.4}, planted {planted:.4}, log tolerance {tol:.4}"
        );
    }

    // 6. Programs: treated against holdout repurchase, months with a complete window.
    for p in truth.programs.iter().filter(|p| p.holdout_share > 0.0) {
        let r = rows_of(
            &ctx,
            &format!(
                "SELECT sum(treated_repurchased), sum(treated_customers), sum(holdout_repurchased), sum(holdout_customers)
                 FROM program_roi WHERE program_id = {} AND window_complete",
                p.program_id
            ),
        )
        .await;
        let v: Vec<f64> = r[0].iter().map(|s| s.parse().unwrap()).collect();
        let measured = (v[0] / v[1]) / (v[2] / v[3]);
        let planted = truth.program_groups[&format!("{}/treated", p.program_id)]
            .mean_return_probability
            / truth.program_groups[&format!("{}/holdout", p.program_id)].mean_return_probability;
        let tol = log_ratio_tolerance(v[0], v[1], v[2], v[3], 0.0);
        report_lines.push(format!(
            "program {}: {measured:.3}, planted {planted:.3}, tolerance ±{tol:.3}",
            p.program_id
        ));
        assert!(
            (measured.ln() - planted.ln()).abs() <= tol,
            "program {}: measured {measured:.4}, planted {planted:.4}, log tolerance {tol:.4}",
            p.program_id
        );
    }
    println!("{}", report_lines.join("\n"));
    assert_finance_matches_truth(&ctx, &truth.finance).await;
}

/// Every reconciled cell's actual and planned amount, and the exceptions by reason, as the
/// generator computed them entry by entry (an independent implementation of the same rule).
async fn assert_finance_matches_truth(
    ctx: &datafusion::prelude::SessionContext,
    truth: &retention::finance_data::FinanceTruth,
) {
    let rows = rows_of(
        ctx,
        "SELECT month, program_id, cost_center, actual, planned FROM budget_reconciliation",
    )
    .await;
    let mut actual = std::collections::BTreeMap::new();
    let mut planned = std::collections::BTreeMap::new();
    for r in rows {
        let key = format!("{}/{}/{}", r[0], r[1], r[2]);
        if r[3] != "0.00" || truth.actual.contains_key(&key) {
            actual.insert(key.clone(), r[3].clone());
        }
        if r[4] != "0.00" || truth.planned.contains_key(&key) {
            planned.insert(key, r[4].clone());
        }
    }
    assert_eq!(actual, truth.actual);
    assert_eq!(planned, truth.planned);
    let rows = rows_of(
        ctx,
        "SELECT reason, count(*) FROM reconciliation_exceptions GROUP BY reason",
    )
    .await;
    let exceptions: std::collections::BTreeMap<String, u64> = rows
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(exceptions, truth.exceptions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_ledger_entries_reconcile_to_the_cent() {
    let opts = retention::generate::GenerateOptions {
        seed: 11,
        customers: 2_000,
        ledger_lines: 5_000,
        ..Default::default()
    };
    let (_lake, ws, generated) = generated_lake(opts, FINANCE_JOBS).await;
    let entries = generated.tables["spend_ledger"];
    assert!(entries >= 1_000_000, "{entries} ledger entries");
    let ctx = ws.query_session().await.unwrap();
    assert_finance_matches_truth(&ctx, &generated.truth.finance).await;
    // Every entry is accounted for: in the reconciliation or an exception.
    let counted = rows_of(
        &ctx,
        "SELECT (SELECT sum(accrual_entries + invoice_entries + reversal_entries + credit_note_entries) FROM budget_reconciliation)
              + (SELECT count(*) FROM reconciliation_exceptions WHERE source = 'ledger') AS n",
    )
    .await;
    assert_eq!(counted[0][0], entries.to_string());
}

// ---------------------------------------------------------------------------------------------
// Real data: the online_retail example keeps every line accounted for.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_retail_example_accounts_for_every_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join("../shared/data/online_retail").exists() {
        skip("needs ../shared/data/online_retail (the shared real data)");
        return;
    }
    let example = root.join("examples/online_retail");
    let lake = TempDir::new().unwrap();
    let curated_root = Url::from_directory_path(lake.path()).unwrap();
    let over = Overrides {
        curated: Some(curated_root.to_string()),
        ..Default::default()
    };
    let project = Project::load(&example, &over).unwrap();
    let ws = Arc::new(Workspace::load(Engine::new(project, Stores::default()).unwrap()).unwrap());
    run_jobs(&ws, &[]).await;
    let ctx = ws.query_session().await.unwrap();
    let one = |sql: &'static str| {
        let ctx = ctx.clone();
        async move { rows_of(&ctx, sql).await.remove(0) }
    };

    // Before: the facts the data's README states, and the exact sum of quantity x price.
    let before = one(
        "SELECT count(*), count(DISTINCT invoice_no), count(DISTINCT customer_id),
                sum(CAST(quantity AS DECIMAL(10,0)) * unit_price) FROM invoice_lines",
    )
    .await;
    assert_eq!(before, vec!["541909", "25900", "4372", "9747747.934"]);
    // The staging table keeps every line.
    let staged = one("SELECT count(*), count(DISTINCT invoice_no), count(DISTINCT customer_id), sum(amount) FROM retail_lines").await;
    assert_eq!(staged, before);

    // After: orders + refunds + lines without a customer (guest invoices, adjustments) add up.
    let after = one(
        "SELECT (SELECT sum(lines) FROM orders) + (SELECT sum(lines) FROM refunds)
                  + (SELECT count(*) FROM retail_lines WHERE customer_id IS NULL) AS lines,
                (SELECT count(*) FROM orders) + (SELECT count(*) FROM refunds)
                  + (SELECT count(DISTINCT invoice_no) FROM retail_lines WHERE customer_id IS NULL) AS invoices,
                (SELECT count(*) FROM customers) AS customers,
                (SELECT sum(gmv_exact) FROM orders) - (SELECT sum(amount_exact) FROM refunds)
                  + (SELECT sum(amount) FROM retail_lines WHERE customer_id IS NULL) AS amount",
    )
    .await;
    assert_eq!(after, before);

    // The marts: every customer with an order has a summary; the rest only cancelled.
    let marts = one(
        "SELECT (SELECT count(*) FROM customer_summary) AS summaries,
                (SELECT count(*) FROM customers WHERE customer_id NOT IN (SELECT customer_id FROM orders)) AS refund_only,
                (SELECT count(*) FROM order_experience) - (SELECT count(*) FROM orders) AS missing,
                (SELECT sum(cohort_size) FROM cohort_retention WHERE months_since_first = 0) AS cohorts,
                (SELECT count(*) FROM customer_churn) AS churn_rows",
    )
    .await;
    let summaries: u64 = marts[0].parse().unwrap();
    let refund_only: u64 = marts[1].parse().unwrap();
    assert_eq!(summaries + refund_only, 4372);
    assert_eq!(marts[2], "0");
    assert_eq!(
        marts[3], marts[0],
        "every summarised customer is in exactly one cohort"
    );
    assert_eq!(marts[4], marts[0]);
    // Net revenue in the marts is the orders' gmv less the refunds linked to them.
    let revenue = one(
        "SELECT (SELECT sum(net_revenue) FROM customer_summary) AS marts,
                (SELECT sum(gmv) FROM orders) - (SELECT sum(amount) FROM refunds WHERE order_id IS NOT NULL) AS adapted",
    )
    .await;
    assert_eq!(revenue[0], revenue[1]);
}

// ---------------------------------------------------------------------------------------------
// Data checks: run on the result before publishing.
// ---------------------------------------------------------------------------------------------

const CUSTOMER_VALUE_CHECKS: &str = r#"
description = "Value per customer."

# Passes: every completed order is counted once (reads another input: `orders`).
[[checks]]
name = "orders_tie_out"
description = "orders summed over customers equal completed orders"
sql = """
SELECT a.n AS summed, b.n AS completed
FROM (SELECT sum(orders) AS n FROM customer_value) a,
     (SELECT count(*) AS n FROM orders WHERE status = 'completed') b
WHERE a.n <> b.n
"""
"#;

#[tokio::test]
async fn checks_pass_or_fail_the_job_before_publishing() {
    let (fx, _) = published().await;
    write(fx.dir(), "jobs/customer_value.toml", CUSTOMER_VALUE_CHECKS);
    fx.cmd(&["validate"]).await.unwrap();
    fx.cmd(&["run", "customer_value"]).await.unwrap();
    assert_eq!(fx.version("customer_value").await, Some(1));
    let after_pass = fx.snapshot().await;

    // A failing check: names the check, shows the violating row, and publishes nothing.
    let failing = format!(
        "{CUSTOMER_VALUE_CHECKS}\n[[checks]]\nname = \"one_order_each\"\ndescription = \"no repeat buyers\"\nsql = \"SELECT customer_id, orders FROM customer_value WHERE orders > $max_orders\"\n[params]\nmax_orders = 1\n"
    );
    write(fx.dir(), "jobs/customer_value.toml", &failing);
    let err = fx.cmd(&["run", "+channel_value"]).await.unwrap_err();
    assert_eq!(err.to_string(), "2 of 2 job(s) failed");
    assert_eq!(fx.snapshot().await, after_pass);
    let msg = fx
        .rows("select job, status, error from _runs where status <> 'succeeded'")
        .await;
    assert!(
        msg.contains("customer_value|failed|job `customer_value`: check `one_order_each` failed (no repeat buyers): 1 violating row(s), e.g. (customer_id=1, orders=2); nothing was published"),
        "{msg}"
    );
    assert!(msg.contains("channel_value|skipped|"), "{msg}");
    // A check that does not plan is a validate error naming the spec file and the check.
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        &failing.replace("WHERE orders >", "WHERE orderz >"),
    );
    let err = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        err.contains("job `customer_value (check `one_order_each`)`") && err.contains("orderz"),
        "{err}"
    );
}

#[tokio::test]
async fn nulls_in_a_not_null_column_break_the_contract() {
    // `status` is declared not null; one partition has a null status.
    let status = Arc::new(StringArray::from(vec![Some("completed"), None]));
    broken_orders_partition(
        "2026-02-22",
        parquet(&orders_with_column("status", status)),
        &[
            "source `orders`: column `status`: declared not null but 1 value(s) are null in file",
            "dt=2026-02-22/part-0.parquet",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_exact_decimal_csv_for_a_month() {
    let opts = retention::generate::GenerateOptions {
        seed: 5,
        customers: 600,
        months: 6,
        ..Default::default()
    };
    let (lake, ws, generated) = generated_lake(opts, FINANCE_JOBS).await;

    let month = "2025-01";
    let out = lake.path().join("export");
    let files = retention::export::export_month_csv(&ws, "budget_reconciliation", month, &out)
        .await
        .unwrap();
    assert_eq!(files.len(), 2);
    let summary = std::fs::read_to_string(&files[0]).unwrap();
    let mut lines = summary.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut exported = std::collections::BTreeMap::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let key = format!(
            "{}/{}/{}",
            cells[col("month")],
            cells[col("program_id")],
            cells[col("cost_center")]
        );
        exported.insert(key, cells[col("actual")].to_string());
    }
    let expected: std::collections::BTreeMap<String, String> = generated
        .truth
        .finance
        .actual
        .iter()
        .filter(|(k, _)| k.starts_with(month))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Exact decimal text, no exponent, every cell of the month.
    let exported_nonzero: std::collections::BTreeMap<String, String> = exported
        .into_iter()
        .filter(|(k, v)| v != "0.00" || expected.contains_key(k))
        .collect();
    assert_eq!(exported_nonzero, expected);
    let detail = std::fs::read_to_string(&files[1]).unwrap();
    assert!(
        detail.starts_with("entry_id,posted_date,service_month,"),
        "{detail}"
    );
    assert!(
        detail
            .lines()
            .skip(1)
            .all(|l| l.contains(&format!(",{month},")))
    );
    assert!(
        detail.lines().any(|l| l.ends_with(",mapped"))
            && detail.lines().any(|l| l.ends_with(",unknown_program")),
        "{detail}"
    );
    assert!(
        !out.join(format!("budget_reconciliation_{month}_summary.csv.partial"))
            .exists()
    );

    // A month that does not exist is a clear error (exit code 2) and writes nothing.
    let err = retention::export::export_month_csv(
        &ws,
        "budget_reconciliation",
        "2026-13",
        &lake.path().join("bad"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--month: month: `2026-13` is not a month: expected YYYY-MM with a month from 01 to 12"
    );
    assert_eq!(retention::cli::exit_code(&err), 2);
    assert!(!lake.path().join("bad").exists());
}

// ---------------------------------------------------------------------------------------------
// Month close on a generated lake: frozen snapshots, late postings, re-open, XLSX.
// ---------------------------------------------------------------------------------------------

/// Every data file under a table directory with its bytes (the Delta log left out).
fn data_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with("_delta_log") {
                    stack.push(p);
                }
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn close_request(
    month: &str,
    action: retention::close::Action,
    minute: u32,
) -> retention::close::Request {
    use chrono::TimeZone;
    retention::close::Request {
        month: month.into(),
        action,
        actor: "ana.finance".into(),
        now: chrono::Utc
            .with_ymd_and_hms(2025, 5, 1, 9, minute, 0)
            .unwrap(),
        concurrency: 2,
    }
}

async fn close_month(
    ws: &Arc<Workspace>,
    req: &retention::close::Request,
) -> retention::close::Outcome {
    let plan = retention::close::plan(ws, req).await.unwrap();
    retention::close::execute(ws.clone(), &plan, req)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_month_is_frozen_and_late_entries_adjust_the_next_open_month() {
    use retention::close::{Action, Outcome};
    let opts = retention::generate::GenerateOptions {
        seed: 5,
        customers: 600,
        months: 6,
        ..Default::default()
    };
    let (lake, ws, _generated) = generated_lake(opts, FINANCE_JOBS).await;
    let month = "2025-01";
    let curated_dir = lake.path().join("curated");
    let q = |sql: String| {
        let ws = ws.clone();
        async move { rows_of(&ws.query_session().await.unwrap(), &sql).await }
    };
    let month_rows = |table: &'static str, column: &'static str| {
        q(format!(
            "SELECT * FROM {table} WHERE {column} = '{month}' ORDER BY 1, 2, 3, 4"
        ))
    };
    let exceptions = q(format!(
        "SELECT count(*) FROM reconciliation_exceptions WHERE month = '{month}'"
    ))
    .await;
    assert_ne!(exceptions[0][0], "0", "the generated month has open items");

    // Close: snapshot 1, the month's open items listed.
    let outcome = close_month(&ws, &close_request(month, Action::Close, 0)).await;
    let Outcome::Closed {
        snapshot,
        frozen,
        open_items,
    } = outcome
    else {
        panic!("expected a close, got {outcome:?}");
    };
    assert_eq!(snapshot, 1);
    assert_eq!(frozen.len(), 2);
    let listed: usize = open_items
        .iter()
        .flat_map(|(_, b)| b)
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(listed.to_string(), exceptions[0][0]);
    let frozen_summary = month_rows("budget_reconciliation", "month").await;
    let frozen_entries = month_rows("budget_reconciliation_entries", "reconciled_month").await;
    assert!(!frozen_summary.is_empty() && !frozen_entries.is_empty());
    let snapshot_files = [
        data_files(&curated_dir.join("_closed_budget_reconciliation")),
        data_files(&curated_dir.join("_closed_budget_reconciliation_entries")),
    ];
    assert!(snapshot_files.iter().all(|f| !f.is_empty()));

    // Closing twice changes nothing: no new log row, no new snapshot.
    let log_before = q("SELECT count(*) FROM _month_close".into()).await;
    let again = close_month(&ws, &close_request(month, Action::Close, 1)).await;
    assert!(
        matches!(again, Outcome::AlreadyClosed(ref l) if l.snapshot == 1),
        "{again:?}"
    );
    assert_eq!(
        q("SELECT count(*) FROM _month_close".into()).await,
        log_before
    );

    // A late posting for the closed month arrives (a new file in the raw ledger): a copy of a
    // mapped entry with a new id and 12.34 in the entry's currency, posted on 2025-03-03.
    let template = q(format!(
        "SELECT (SELECT max(entry_id) + 1 FROM budget_reconciliation_entries), program_id, cost_center, currency, rate_to_reporting
         FROM budget_reconciliation_entries WHERE service_month = '{month}' AND mapping = 'mapped'
         ORDER BY entry_id LIMIT 1"
    ))
    .await
    .remove(0);
    let late_id: i64 = template[0].parse().unwrap();
    let late = RecordBatch::try_new(
        retention::finance_data::ledger_schema(),
        vec![
            Arc::new(Int64Array::from(vec![late_id])),
            Arc::new(datafusion::arrow::array::Date32Array::from(vec![20150])), // 2025-03-03
            Arc::new(StringArray::from(vec![month])),
            Arc::new(Int64Array::from(vec![template[1].parse::<i64>().unwrap()])),
            Arc::new(StringArray::from(vec![template[2].as_str()])),
            Arc::new(StringArray::from(vec!["LateVendor"])),
            Arc::new(StringArray::from(vec!["LATE-1"])),
            Arc::new(StringArray::from(vec![template[3].as_str()])),
            money(&[1234]),
            Arc::new(StringArray::from(vec!["invoice"])),
        ],
    )
    .unwrap();
    let late_dir = lake.path().join("raw/spend_ledger/dt=2025-03-03");
    std::fs::create_dir_all(&late_dir).unwrap();
    std::fs::write(late_dir.join("late-0000.parquet"), parquet(&late)).unwrap();
    run_jobs(&ws, FINANCE_JOBS).await;

    // The closed month reads exactly as frozen, its snapshot files are byte-identical, and the
    // late entry is a prior-period adjustment of February, linked to January.
    assert_eq!(
        month_rows("budget_reconciliation", "month").await,
        frozen_summary
    );
    assert_eq!(
        month_rows("budget_reconciliation_entries", "reconciled_month").await,
        frozen_entries
    );
    assert_eq!(
        data_files(&curated_dir.join("_closed_budget_reconciliation")),
        snapshot_files[0]
    );
    assert_eq!(
        data_files(&curated_dir.join("_closed_budget_reconciliation_entries")),
        snapshot_files[1]
    );
    let placed = q(format!(
        "SELECT reconciled_month, prior_period, amount_reporting FROM budget_reconciliation_entries WHERE entry_id = {late_id}"
    ))
    .await;
    let rate: f64 = template[4].parse().unwrap();
    let converted = format!("{:.2}", (12.34 * rate * 100.0).round() / 100.0);
    assert_eq!(
        placed,
        vec![vec![
            "2025-02".to_string(),
            "true".into(),
            converted.clone()
        ]]
    );
    let adjusted = q(format!(
        "SELECT prior_period_adjustments, adjusted_closed_months FROM budget_reconciliation
         WHERE month = '2025-02' AND program_id = {} AND cost_center = '{}'",
        template[1], template[2]
    ))
    .await;
    assert_eq!(adjusted, vec![vec![converted.clone(), month.to_string()]]);

    // The export of a closed month reads the snapshot: the XLSX summary says so and its
    // actuals equal the frozen rows.
    let out = lake.path().join("export");
    let files = retention::export::export_month_xlsx(&ws, "budget_reconciliation", month, &out)
        .await
        .unwrap();
    let script = r#"
import sys, openpyxl
wb = openpyxl.load_workbook(sys.argv[1])
s = wb["Summary"]
print(s["A1"].value)
header = [c.value for c in s[3]]
col = header.index("actual")
count = 0
for row in s.iter_rows(min_row=4, values_only=True):
    if row[0] is None:
        break
    status = row[header.index("status")]
    fill = s.cell(row=4 + count, column=header.index("variance") + 1).fill.fgColor.rgb
    count += 1
    print("%s|%s|%.2f|%s|%s|%s" % (row[1], row[3], row[col], s.cell(row=4, column=col + 1).number_format, status, fill))
print(wb["Detail"].max_row - 3)
"#;
    match std::process::Command::new("python3")
        .args(["-c", script, files[0].to_str().unwrap()])
        .output()
    {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8(o.stdout).unwrap();
            let mut lines = text.lines();
            assert_eq!(
                lines.next().unwrap(),
                format!("Budget reconciliation {month} (USD), closed, snapshot 1")
            );
            let expected = q(format!(
                "SELECT program_id, cost_center, actual FROM budget_reconciliation
                 WHERE month = '{month}' ORDER BY program_id, cost_center"
            ))
            .await;
            let lines: Vec<&str> = lines.collect();
            assert_eq!(lines.len(), expected.len() + 1, "{text}");
            for (line, e) in lines.iter().zip(&expected) {
                assert!(
                    line.starts_with(&format!("{}|{}|{}|#,##0.00 \"USD\"", e[0], e[1], e[2])),
                    "{line} vs {e:?}"
                );
                // Variance highlighted: red over plan, amber under, none on plan.
                let fill = match line.split('|').nth(4).unwrap() {
                    "over" => "FFFFC7CE",
                    "under" => "FFFFEB9C",
                    _ => "00000000",
                };
                assert!(line.ends_with(fill), "{line}");
            }
            assert_eq!(
                lines.last().unwrap().to_string(),
                frozen_entries.len().to_string()
            );
        }
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'openpyxl'") => {
            skip("python3 with openpyxl (pip install openpyxl) reads the workbook")
        }
        other => panic!("reading the workbook failed: {other:?}"),
    }

    // A month that does not exist is a clear error (exit code 2); nothing is written.
    let err = retention::close::plan(&ws, &close_request("2026-13", Action::Close, 2))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--month: month: `2026-13` is not a month: expected YYYY-MM with a month from 01 to 12"
    );
    assert_eq!(retention::cli::exit_code(&err), 2);

    // Re-opening needs a reason, is recorded with who/when/why, and keeps the old snapshot.
    let no_reason = retention::close::plan(
        &ws,
        &close_request(month, Action::Reopen { reason: " ".into() }, 2),
    )
    .await
    .unwrap();
    let err = retention::close::execute(
        ws.clone(),
        &no_reason,
        &close_request(month, Action::Reopen { reason: " ".into() }, 2),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("needs a reason"), "{err}");
    let why = "vendor LateVendor invoice LATE-1 belongs to January";
    let reopened = close_month(
        &ws,
        &close_request(month, Action::Reopen { reason: why.into() }, 3),
    )
    .await;
    assert!(
        matches!(reopened, Outcome::Reopened { snapshot: 1, .. }),
        "{reopened:?}"
    );
    let ledger = q(
        "SELECT job, trigger, actor, reason, CAST(started_at AS VARCHAR) FROM _runs WHERE trigger = 'reopen'"
            .to_string(),
    )
    .await;
    assert_eq!(
        ledger,
        vec![vec![
            format!("close-month {month}"),
            "reopen".into(),
            "ana.finance".into(),
            why.into(),
            "2025-05-01T09:03:00Z".into()
        ]]
    );
    let old = q(format!(
        "SELECT * EXCLUDE (closed_month, snapshot) FROM _closed_budget_reconciliation
         WHERE closed_month = '{month}' AND snapshot = 1 ORDER BY 1, 2, 3, 4"
    ))
    .await;
    assert_eq!(old, frozen_summary);
    // Open again, January now counts the late entry in its own actual; February no longer
    // shows it.
    let january = q(format!(
        "SELECT sum(actual) FROM budget_reconciliation WHERE month = '{month}'"
    ))
    .await;
    let frozen_total = q(format!(
        "SELECT sum(actual) + CAST('{converted}' AS DECIMAL(18,2)) FROM _closed_budget_reconciliation WHERE closed_month = '{month}'"
    ))
    .await;
    assert_eq!(january, frozen_total);
    let february = q(
        "SELECT sum(prior_period_entries) FROM budget_reconciliation WHERE month = '2025-02'"
            .into(),
    )
    .await;
    assert_eq!(february[0][0], "0");
    // Closing it again makes snapshot 2.
    let closed = close_month(&ws, &close_request(month, Action::Close, 4)).await;
    assert!(
        matches!(closed, Outcome::Closed { snapshot: 2, .. }),
        "{closed:?}"
    );
}

/// A non-numeric amount in a CSV ledger is a contract error naming the file and line; nothing is
/// published and the earlier reconciliation stays.
#[tokio::test]
async fn non_numeric_amount_in_a_csv_ledger_is_named_by_file_and_line() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    write(
        fx.dir(),
        "jobs/sources.toml",
        &format!(
            "{SOURCES}{}",
            r#"
[[source]]
name = "spend_ledger"
format = "csv"
columns = [
  { name = "entry_id", type = "bigint", nullable = false },
  { name = "service_month", type = "string", nullable = false },
  { name = "currency", type = "string", nullable = false },
  { name = "amount", type = "decimal(18,2)", nullable = false },
]
"#
        ),
    );
    write(
        fx.dir(),
        "jobs/ledger_totals.toml",
        "description = \"Ledger per month\"\n",
    );
    write(
        fx.dir(),
        "sql/ledger_totals.sql",
        "SELECT service_month, currency, count(*) AS entries, sum(amount) AS amount FROM spend_ledger GROUP BY service_month, currency",
    );
    fx.put_raw(
        "spend_ledger/2026-10.csv",
        b"entry_id,service_month,currency,amount\n1,2026-10,EUR,100.10\n2,2026-10,EUR,-0.05\n"
            .to_vec(),
    )
    .await;
    fx.cmd(&["run", "ledger_totals"]).await.unwrap();
    assert_eq!(
        rows_at_version(&fx, "ledger_totals", 0).await,
        "service_month|currency|entries|amount\n2026-10|EUR|2|100.05"
    );
    for (body, found, line) in [
        (
            &b"entry_id,service_month,currency,amount\n3,2026-11,EUR,12.5O\n"[..],
            "12.5O",
            2,
        ),
        (
            &b"entry_id,service_month,currency,amount\n3,2026-11,EUR,1.00\n4,2026-11,EUR,1e3\n"[..],
            "1e3",
            3,
        ),
        (
            &b"entry_id,service_month,currency,amount\n3,2026-11,EUR,\"1,000.00\"\n"[..],
            "1,000.00",
            2,
        ),
    ] {
        fx.put_raw("spend_ledger/2026-11.csv", body.to_vec()).await;
        let err = fx.cmd(&["run", "ledger_totals"]).await.unwrap_err();
        assert_eq!(err.to_string(), "1 of 1 job(s) failed");
        let msg = fx
            .rows(
                "select error from _runs where status = 'failed' order by started_at desc limit 1",
            )
            .await;
        assert!(
            msg.contains(&format!(
                "source `spend_ledger`: column `amount`: expected decimal(18,2) but found `{found}` in file"
            )) && msg.contains(&format!("spend_ledger/2026-11.csv (line {line})")),
            "{msg}"
        );
        assert_eq!(fx.version("ledger_totals").await, Some(0));
        fx.delete_raw("spend_ledger/2026-11.csv").await;
    }
}

// ---------------------------------------------------------------------------------------------
// The scheduler.
// ---------------------------------------------------------------------------------------------

fn utc(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn schedule_runs_the_close_candidate_report_on_the_first_after_the_finance_jobs() {
    let project =
        Project::load(Path::new(env!("CARGO_MANIFEST_DIR")), &Overrides::default()).unwrap();
    let ws = Workspace::load(Engine::new(project, Stores::default()).unwrap()).unwrap();
    let firings = retention::schedule::firings(
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
        retention::schedule::order_problems(&ws, utc("2026-11-30T00:00:00Z")).unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn schedule_fires_jobs_and_flags_a_job_scheduled_before_its_input() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    // customer_value every second; channel_value (which reads it) at 05:00, before it at 06:00.
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "description = \"Value per customer.\"\nschedule = \"* * * * * *\"\n",
    );
    let ws = fx.workspace().await;
    assert!(
        retention::schedule::order_problems(&ws, utc("2026-11-30T00:00:00Z"))
            .unwrap()
            .is_empty()
    );
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "schedule = \"0 0 6 * * *\"\n",
    );
    write(
        fx.dir(),
        "jobs/channel_value.toml",
        &format!("schedule = \"0 0 5 * * *\"\n{CHANNEL_VALUE_TOML}"),
    );
    let late = fx.workspace().await;
    assert_eq!(
        retention::schedule::order_problems(&late, utc("2026-11-30T00:00:00Z")).unwrap(),
        vec!["job `channel_value` is scheduled at 05:00:00 UTC but reads `customer_value`, scheduled later that day: it would read the previous `customer_value`".to_string()]
    );

    // The daemon: customer_value fires every second; stop it after 4.5 s (at least two firings).
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "description = \"Value per customer.\"\nschedule = \"* * * * * *\"\n",
    );
    write(fx.dir(), "jobs/channel_value.toml", CHANNEL_VALUE_TOML);
    let ws = Arc::new(fx.workspace().await);
    retention::schedule::serve(
        ws,
        1,
        tokio::time::sleep(std::time::Duration::from_millis(4500)),
    )
    .await
    .unwrap();
    let runs = fx
        .rows("select job, trigger, status, min(rows_written) as rows, count(*) >= 2 as repeated from _runs group by job, trigger, status")
        .await;
    assert_eq!(
        runs,
        "job|trigger|status|rows|repeated\ncustomer_value|schedule|succeeded|3|true"
    );
    assert_eq!(
        fx.rows("select * from customer_value order by 1").await,
        EXPECTED_CUSTOMER
    );
}

/// A close that dies after writing its snapshots but before its log row (the commit point)
/// leaves the month open; the next close numbers past the orphaned snapshot, which is never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_dies_before_its_log_row_is_never_read() {
    use retention::close::{Action, Outcome};
    let opts = retention::generate::GenerateOptions {
        seed: 9,
        customers: 400,
        months: 4,
        ..Default::default()
    };
    let (lake, ws, _generated) = generated_lake(opts, FINANCE_JOBS).await;
    let month = "2025-01";
    let q = |ws: Arc<Workspace>, sql: String| async move {
        rows_of(&ws.query_session().await.unwrap(), &sql).await
    };
    let live =
        format!("SELECT * FROM budget_reconciliation WHERE month = '{month}' ORDER BY 1, 2, 3, 4");
    let before = q(ws.clone(), live.clone()).await;

    // The same lake through a store that refuses writes to the close log.
    let stores = Stores::default();
    stores.inject(
        &Url::parse("file:///").unwrap(),
        Arc::new(RefusingStore {
            inner: Arc::new(object_store::local::LocalFileSystem::new()),
            needle: "_month_close",
        }),
    );
    let over = Overrides {
        raw: Some(
            Url::from_directory_path(lake.path().join("raw"))
                .unwrap()
                .to_string(),
        ),
        curated: Some(
            Url::from_directory_path(lake.path().join("curated"))
                .unwrap()
                .to_string(),
        ),
        ..Default::default()
    };
    let project = Project::load(Path::new(env!("CARGO_MANIFEST_DIR")), &over).unwrap();
    let dying = Arc::new(Workspace::load(Engine::new(project, stores).unwrap()).unwrap());
    let req = close_request(month, Action::Close, 0);
    let plan = retention::close::plan(&dying, &req).await.unwrap();
    let err = retention::close::execute(dying.clone(), &plan, &req)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("_month_close"), "{err}");
    let orphans = q(ws.clone(), format!(
        "SELECT DISTINCT snapshot FROM _closed_budget_reconciliation WHERE closed_month = '{month}'"
    ))
    .await;
    assert_eq!(
        orphans,
        vec![vec!["1".to_string()]],
        "the snapshot rows were written"
    );

    // The month is still open: a run shows it live, as before.
    run_jobs(&ws, FINANCE_JOBS).await;
    assert_eq!(q(ws.clone(), live.clone()).await, before);
    // The next close is snapshot 2, and only its rows are read.
    let closed = close_month(&ws, &close_request(month, Action::Close, 1)).await;
    assert!(
        matches!(closed, Outcome::Closed { snapshot: 2, .. }),
        "{closed:?}"
    );
    run_jobs(&ws, FINANCE_JOBS).await;
    assert_eq!(q(ws.clone(), live).await, before);
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

/// A `[close]` naming a column the job does not output is a validate error (before any close).
#[tokio::test]
async fn close_columns_are_checked_by_validate() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    write(
        fx.dir(),
        "jobs/monthly_net.toml",
        "[close]\nmonth_column = \"order_mnth\"\nrecord_id_column = \"order_month\"\n",
    );
    write(
        fx.dir(),
        "sql/monthly_net.sql",
        "SELECT substr(dt, 1, 7) AS order_month, sum(gmv - discount) AS net FROM orders GROUP BY 1",
    );
    let err = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        err.contains("monthly_net.toml: close.month_column: `order_mnth` is not a column of the job's output (columns: order_month, net)"),
        "{err}"
    );
    assert!(
        err.contains("monthly_net.toml: close.record_id_column: column `order_month` is Utf8, expected an integer id"),
        "{err}"
    );
}
