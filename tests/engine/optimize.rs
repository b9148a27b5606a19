//! `retention optimize`: a nightly job's table compacted, or Z-ordered by its spec, in one
//! commit that changes no row; `--dry-run` writes nothing; bad tables and columns are named.

use super::incremental::{day, run_as_of, with_days};
use super::*;

/// Data files of the table's latest version.
async fn files(fx: &Fixture, table: &str) -> usize {
    let url = curated::table_url(&fx.curated, table).unwrap();
    let t = curated::open(&fx.stores, &url).await.unwrap().unwrap();
    t.get_file_uris().unwrap().count()
}

/// daily_orders after a first run and a nightly run for each of the next 9 days.
async fn nightly_table() -> Fixture {
    let fx = with_days(2, 12).await;
    for d in day("2026-01-03").iter_days().take(10) {
        run_as_of(&fx, "daily_orders", d).await;
    }
    fx
}

/// The table's rows rewritten one row per file, as a writer with a tiny target size would.
async fn fragment(fx: &Fixture, table: &str) {
    let url = curated::table_url(&fx.curated, table).unwrap();
    let t = curated::open(&fx.stores, &url).await.unwrap().unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("t", curated::provider(&t).await.unwrap())
        .unwrap();
    let batches = ctx
        .sql("select * from t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let rows: Vec<RecordBatch> = batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| b.slice(i, 1)))
        .collect();
    t.write(rows)
        .with_save_mode(deltalake::protocol::SaveMode::Overwrite)
        .with_target_file_size(std::num::NonZeroU64::new(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn optimize_compacts_a_nightly_tables_files_and_keeps_its_rows() {
    let fx = nightly_table().await;
    let rows = fx.rows("select * from daily_orders").await;
    assert_eq!(rows.lines().count(), 1 + 12);
    // Nightly runs replace their days inside the one file: nothing to compact yet.
    assert_eq!(files(&fx, "daily_orders").await, 1);
    let version = fx.version("daily_orders").await.unwrap();
    fx.cmd(&["optimize", "daily_orders"]).await.unwrap();
    assert_eq!(fx.version("daily_orders").await, Some(version));

    fragment(&fx, "daily_orders").await;
    assert_eq!(files(&fx, "daily_orders").await, 12);
    assert_eq!(fx.rows("select * from daily_orders").await, rows);
    let version = version + 1;

    let url = curated::table_url(&fx.curated, "daily_orders").unwrap();
    let table = curated::open(&fx.stores, &url).await.unwrap().unwrap();
    let layout = retention::store::layout::Layout {
        zorder_by: vec![],
        target_size: std::num::NonZeroU64::new(100 << 20).unwrap(),
        files: Default::default(),
    };
    let planned = retention::store::layout::plan(&table, &layout)
        .await
        .unwrap();
    assert_eq!(
        (
            planned.files_before,
            planned.files_removed,
            planned.partitions
        ),
        (12, 12, 1)
    );
    fx.cmd(&["optimize", "daily_orders", "--dry-run"])
        .await
        .unwrap();
    assert_eq!(
        fx.version("daily_orders").await,
        Some(version),
        "a plan writes nothing"
    );

    fx.cmd(&["optimize", "daily_orders"]).await.unwrap();
    assert_eq!(files(&fx, "daily_orders").await, 1);
    assert_eq!(fx.version("daily_orders").await, Some(version + 1));
    assert_eq!(fx.rows("select * from daily_orders").await, rows);
    // A second pass finds nothing to do and commits nothing.
    fx.cmd(&["optimize", "daily_orders"]).await.unwrap();
    assert_eq!(fx.version("daily_orders").await, Some(version + 1));
    // The next nightly run goes on from the compacted table.
    put_late_day(&fx).await;
    run_as_of(&fx, "daily_orders", day("2026-01-13")).await;
    assert_eq!(
        fx.rows("select order_day, orders from daily_orders where order_day = '2026-01-13'")
            .await,
        "order_day|orders\n2026-01-13|2"
    );
}

async fn put_late_day(fx: &Fixture) {
    fx.put_raw(
        "orders/dt=2026-01-13/part-0.parquet",
        parquet(&orders_batch(&[
            (9001, 1, 100, 0, "completed"),
            (9002, 2, 200, 0, "completed"),
        ])),
    )
    .await;
}

#[tokio::test]
async fn optimize_z_orders_by_the_specs_columns() {
    let fx = nightly_table().await;
    let rows = fx.rows("select * from daily_orders").await;
    let spec = fx.dir().join("jobs/daily_orders.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        format!("{text}[output]\nzorder_by = [\"net_revenue\"]\n"),
    )
    .unwrap();
    let version = fx.version("daily_orders").await.unwrap();
    fx.cmd(&["optimize"]).await.unwrap();
    assert_eq!(fx.version("daily_orders").await, Some(version + 1));
    assert_eq!(files(&fx, "daily_orders").await, 1);
    assert_eq!(fx.rows("select * from daily_orders").await, rows);
    // Z-order rewrites every file again, even one.
    fx.cmd(&["optimize", "daily_orders"]).await.unwrap();
    assert_eq!(fx.version("daily_orders").await, Some(version + 2));
    assert_eq!(fx.rows("select * from daily_orders").await, rows);
}

#[tokio::test]
async fn optimize_names_an_unknown_table_or_column() {
    let fx = nightly_table().await;
    let e = fx.cmd(&["optimize", "nope"]).await.unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .contains("TABLE: nope: no job writes this table (tables: "),
        "{e}"
    );
    let e = fx
        .cmd(&["optimize", "daily_orders", "--zorder", "no_such_column"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_such_column"), "{e}");
    // In a spec, `validate` names the file and key.
    let spec = fx.dir().join("jobs/daily_orders.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        format!("{text}[output]\nzorder_by = [\"no_such_column\"]\n"),
    )
    .unwrap();
    let e = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        e.contains("daily_orders.toml: output.zorder_by: `no_such_column` is not a column of the job's output"),
        "{e}"
    );
    std::fs::write(
        &spec,
        format!("{text}[output]\npartition_by = [\"order_day\"]\nmode = \"overwrite_partitions\"\nzorder_by = [\"order_day\"]\n"),
    )
    .unwrap();
    let e = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        e.contains("output.zorder_by: `order_day` is a partition column"),
        "{e}"
    );
}
