//! Integration tests of the job engine: one shared suite run against every backend (InMemory,
//! local files, an S3-compatible server), every kind of bad input, commit conflicts, a crash
//! test that SIGKILLs runs, and an independent reader (Python `deltalake`).
//!
//! One test binary with a module per concern; the fixtures the modules share live here. The
//! project's own SQL unit tests (tests/sql/*.slt) are the `sql` test target, one test per file.

// Long scenario tests read top to bottom; the 120-line limit is for production code.
#![allow(clippy::too_many_lines)]

#[path = "../common/mod.rs"]
mod common;

mod backends;
mod bad_input;
mod checks;
mod cluster;
mod clv;
mod commands;
mod crash;
mod csv_sources;
mod finance;
mod freshness;
mod incremental;
mod marts;
mod optimize;
mod readers;
mod real_data;
mod report;
mod serve;
mod sql_runner;
mod sql_server;
mod stores;

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
use retention::Error;
use retention::cli::{Cli, run};
use retention::engine::session::Engine;
use retention::plan::workspace::Workspace;
use retention::project::config::{Overrides, Project};
use retention::store::Stores;
use retention::store::delta as curated;
use tempfile::TempDir;
use url::Url;

use common::repository_workspace;

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
        let over =
            Overrides::with_storage(Some(self.raw.to_string()), Some(self.curated.to_string()));
        let project = Project::load(self.dir(), &over).unwrap();
        retention::app::workspace(project, self.stores.clone()).unwrap()
    }

    /// Rows of a query over the curated tables (read straight from Delta, without the project's
    /// files, which some tests break on purpose) as sorted `a|b|c` lines under a header.
    async fn rows(&self, sql: &str) -> String {
        let over =
            Overrides::with_storage(Some(self.raw.to_string()), Some(self.curated.to_string()));
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
            "daily_orders",
            "daily_orders_full",
            "order_days",
            "slow",
            "joined",
            "paired",
            "by_status",
            "ranked",
            "hoard",
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

    /// customer_value and channel_value hold the rows worked out by hand.
    async fn assert_value_marts(&self) {
        assert_eq!(
            self.rows("select * from customer_value").await,
            EXPECTED_CUSTOMER
        );
        assert_eq!(
            self.rows("select * from channel_value").await,
            EXPECTED_CHANNEL
        );
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
// Shared by several modules: the published fixture, broken inputs, reading curated tables.
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

const CURATED_TABLES: [&str; 3] = ["daily_revenue", "customer_value", "channel_value"];

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
    let selectors: Vec<retention::values::Selector> =
        selectors.iter().map(|s| s.parse().unwrap()).collect();
    let selected = ws.graph.select(&selectors, selectors.is_empty()).unwrap();
    let plan = ws
        .plan(&selected, retention::values::Trigger::Manual)
        .unwrap();
    retention::execute::execute(ws.clone(), &plan, 2)
        .await
        .unwrap()
        .into_result()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The generated lake, shared by the marts and finance tests.
// ---------------------------------------------------------------------------------------------

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
    let over = Overrides::with_storage(Some(raw.to_string()), Some(curated_root.to_string()));
    let project = Project::load(Path::new(env!("CARGO_MANIFEST_DIR")), &over).unwrap();
    let stores = Stores::default();
    let generated = retention::generate::generate(&stores, &raw, &opts, None)
        .await
        .unwrap();
    let ws = Arc::new(retention::app::workspace(project, stores).unwrap());
    run_jobs(&ws, selectors).await;
    (lake, ws, generated)
}
