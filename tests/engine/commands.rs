//! The inspection and upkeep commands: plan (text and dot), explain, runs, query, vacuum, and
//! `generate --through`.

use super::*;

#[tokio::test]
async fn plan_lists_order_inputs_and_dot() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    let ws = fx.workspace().await;
    let selected = ws
        .graph
        .select(&["+channel_value".parse().unwrap()], false)
        .unwrap();
    let plan = ws
        .plan(&selected, retention::values::Trigger::Manual)
        .unwrap();
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
        ws.graph
            .select(&["tag:finance".parse().unwrap()], false)
            .unwrap(),
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

/// The binary gives Delta's writer one task per query partition (at least 8) unless the
/// environment sets `DELTARS_MAX_CONCURRENT_WRITERS`; each month of a partitioned table still goes
/// to one task, so it is written to one file, with the hand-computed rows.
#[tokio::test]
async fn the_binary_writes_each_partition_to_one_file_with_many_writer_tasks() {
    let fx = Fixture::new(Backend::Local).unwrap();
    fx.write_hand_data().await;
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_retention"))
        .args(["-C", &fx.dir().display().to_string()])
        .args(["--raw", fx.raw.as_str(), "--curated", fx.curated.as_str()])
        .args(["run", "daily_revenue"])
        .env_remove(retention::store::delta::CONCURRENT_WRITERS_VAR)
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fx.rows("select * from daily_revenue").await, EXPECTED_DAILY);
    // The partition folder of each file the table's log lists.
    let url = curated::table_url(&fx.curated, "daily_revenue").unwrap();
    let table = curated::open(&fx.stores, &url).await.unwrap().unwrap();
    let mut folders: Vec<String> = table
        .get_file_uris()
        .unwrap()
        .map(|uri| uri.rsplit('/').nth(1).unwrap().to_string())
        .collect();
    folders.sort();
    assert_eq!(folders, ["order_month=2026-01", "order_month=2026-02"]);
    assert_eq!(retention::store::delta::default_concurrent_writers(2), 8);
}

/// A job's result collected for its checks is known to be small before it is written, and its
/// file is compressed with Snappy; a result streamed to the writer, of unknown size, with zstd.
/// The rows are the same.
#[tokio::test]
async fn a_small_result_collected_for_its_checks_is_written_with_snappy() {
    use datafusion::parquet::basic::Compression;
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    let spec = "description = \"Orders.\"\n[output]\nsort_by = [\"order_id\"]\n";
    write(fx.dir(), "jobs/order_lines.toml", spec);
    write(
        fx.dir(),
        "sql/order_lines.sql",
        "SELECT order_id, customer_id, gmv FROM orders",
    );
    // The codec of each column chunk, and the rows, of the table's one file.
    let written = || async {
        let file = the_only_file(&fx, "order_lines").await;
        let group = file.metadata().row_group(0);
        let codecs: Vec<Compression> = group.columns().iter().map(|c| c.compression()).collect();
        let batches: Vec<RecordBatch> = file.build().unwrap().map(|b| b.unwrap()).collect();
        let rows = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        (codecs, rows)
    };
    fx.cmd(&["run", "order_lines"]).await.unwrap();
    let (codecs, streamed) = written().await;
    assert_eq!(codecs, [Compression::ZSTD(Default::default()); 3]);
    assert_eq!(streamed.lines().count(), 4 + 5, "{streamed}");

    let check =
        "[[checks]]\nname = \"positive\"\nsql = \"SELECT * FROM order_lines WHERE gmv <= 0\"\n";
    write(fx.dir(), "jobs/order_lines.toml", &format!("{spec}{check}"));
    fx.cmd(&["run", "order_lines"]).await.unwrap();
    let (codecs, checked) = written().await;
    assert_eq!(codecs, [Compression::SNAPPY; 3]);
    assert_eq!(checked, streamed);
}

/// `retention query` is read-only: COPY, DDL and SET are refused (exit code 2) and write nothing;
/// `--allow-write` lets an operator run them on purpose.
#[tokio::test]
async fn query_is_read_only_unless_allowed() {
    let fx = Fixture::new(Backend::Local).unwrap();
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    let target = fx.dir().join("copied.csv");
    let copy = format!(
        "COPY (SELECT * FROM channel_value) TO '{}' STORED AS CSV",
        target.display()
    );
    for sql in [
        copy.as_str(),
        "CREATE TABLE t AS SELECT 1 AS x",
        "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/tmp/retention-nowhere.csv'",
        "DROP TABLE channel_value",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let err = fx.cmd(&["query", sql]).await.unwrap_err();
        assert!(err.to_string().starts_with("read-only: "), "{sql}: {err}");
        assert_eq!(retention::cli::exit_code(&err), 2, "{sql}");
    }
    assert!(!target.exists(), "a refused COPY wrote its file");
    assert_eq!(
        fx.rows("select * from channel_value").await,
        EXPECTED_CHANNEL
    );
    fx.cmd(&["query", "--allow-write", &copy]).await.unwrap();
    assert!(target.exists());
}

/// `--as-of` is parsed once, by clap, into a day, `latest` or `today`.
#[test]
fn as_of_flag_is_a_day_latest_or_today() {
    for ok in ["2026-03-31", "latest", "today"] {
        assert!(Cli::try_parse_from(["retention", "run", "--all", "--as-of", ok]).is_ok());
    }
    let e = Cli::try_parse_from(["retention", "run", "--all", "--as-of", "2026-13-01"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`2026-13-01` is not a date (YYYY-MM-DD), `latest` or `today`"),
        "{e}"
    );
}

/// The as-of day is the engine's, not a parameter: `--param as_of=...` points to `--as-of`.
#[tokio::test]
async fn param_as_of_points_to_the_as_of_flag() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    let err = fx
        .cmd(&["run", "--all", "--param", "as_of=2026-01-31"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--param: as_of: the as-of day is not a parameter: use --as-of DAY (or latest, today)"
    );
    assert_eq!(retention::cli::exit_code(&err), 2);
}

/// `generate --through DAY` creates a lake through DAY, and on that lake appends the days after
/// its last one; other generator options then are refused, and so is a day already generated.
#[tokio::test]
async fn generate_through_creates_then_extends_a_lake() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    let base = ["generate", "--customers", "300", "--months", "3"];
    fx.cmd(&[&base[..], &["--through", "2024-12-10"]].concat())
        .await
        .unwrap();
    let end = |lake: Option<(retention::generate::GenerateOptions, chrono::NaiveDate)>| {
        let (opts, end) = lake.unwrap();
        (opts.customers, opts.months, end.to_string())
    };
    let lake = retention::generate::existing_lake(&fx.stores, &fx.raw).await;
    assert_eq!(end(lake.unwrap()), (300, 3, "2024-12-10".into()));
    // The same options, or none: appended.
    fx.cmd(&["generate", "--through", "2024-12-12"])
        .await
        .unwrap();
    fx.cmd(&[&base[..], &["--through", "2024-12-13"]].concat())
        .await
        .unwrap();
    let lake = retention::generate::existing_lake(&fx.stores, &fx.raw).await;
    assert_eq!(end(lake.unwrap()), (300, 3, "2024-12-13".into()));
    let e = fx
        .cmd(&["generate", "--through", "2024-12-14", "--customers", "999"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--through") && e.contains("extend it without other generator options"),
        "{e}"
    );
    let e = fx
        .cmd(&["generate", "--through", "2024-12-13"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("already generated through 2024-12-13"), "{e}");
}

/// `export TABLE`: any curated table as CSV, JSON, Parquet or XLSX, filtered, projected and at an
/// older version, with decimals exact; bad predicates, columns and tables are refused by name and
/// write nothing.
#[tokio::test]
async fn export_writes_any_curated_table_filtered_projected_and_at_a_version() {
    let fx = Fixture::new(Backend::Local).unwrap();
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    let first = fx.version("customer_value").await.unwrap();
    fx.cmd(&["run", "customer_value"]).await.unwrap();
    let out = fx.dir().join("exports");
    let out_s = out.display().to_string();

    fx.cmd(&[
        "export",
        "customer_value",
        "--where",
        "acquisition_channel = 'search' AND orders >= 1",
        "--columns",
        "customer_id,net_revenue",
        "--out",
        &out_s,
    ])
    .await
    .unwrap();
    assert_eq!(
        sorted_lines(&std::fs::read_to_string(out.join("customer_value.csv")).unwrap()),
        ["1,16.00", "3,90.00", "customer_id,net_revenue"]
    );

    fx.cmd(&[
        "export",
        "customer_value",
        "--format",
        "json",
        "--out",
        &out_s,
    ])
    .await
    .unwrap();
    let json = std::fs::read_to_string(out.join("customer_value.json")).unwrap();
    assert!(json.starts_with('['), "{json}");
    assert!(
        json.contains(
            r#""customer_id":2,"acquisition_channel":"social","orders":1,"net_revenue":20.50"#
        ),
        "{json}"
    );

    let version = first.to_string();
    fx.cmd(&[
        "export",
        "customer_value",
        "--format",
        "parquet",
        "--version",
        &version,
        "--out",
        &out_s,
    ])
    .await
    .unwrap();
    let path = out.join(format!("customer_value_v{first}.parquet"));
    let file = std::fs::File::open(&path).unwrap();
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    // The table's own decimal type (sum widened it to 29 digits), not a float.
    let url = curated::table_url(&fx.curated, "customer_value").unwrap();
    let table = curated::open(&fx.stores, &url).await.unwrap().unwrap();
    let delta_schema = curated::provider(&table).await.unwrap().schema();
    assert_eq!(
        batches[0]
            .schema()
            .field_with_name("net_revenue")
            .unwrap()
            .data_type(),
        delta_schema
            .field_with_name("net_revenue")
            .unwrap()
            .data_type()
    );
    assert!(matches!(
        delta_schema
            .field_with_name("net_revenue")
            .unwrap()
            .data_type(),
        DataType::Decimal128(_, 2)
    ));
    assert_eq!(
        sorted_lines(&render(&batches)),
        sorted_lines(EXPECTED_CUSTOMER)
    );

    fx.cmd(&[
        "export",
        "channel_value",
        "--format",
        "xlsx",
        "--out",
        &out_s,
    ])
    .await
    .unwrap();
    let xlsx = std::fs::read(out.join("channel_value.xlsx")).unwrap();
    assert_eq!(&xlsx[..2], b"PK", "an xlsx is a zip");

    // Refusals name what is wrong and leave no file.
    let before = std::fs::read_dir(&out).unwrap().count();
    for (args, expected) in [
        (
            vec!["export", "customer_value", "--where", "no_such_column > 1"],
            "--where",
        ),
        (
            vec!["export", "customer_value", "--columns", "customer_id,nope"],
            "--columns",
        ),
        (vec!["export", "nope_table"], "not a curated table"),
        (
            vec!["export", "customer_value", "--where", "1; DROP TABLE x"],
            "--where",
        ),
    ] {
        let mut args = args;
        args.extend(["--out", &out_s]);
        let e = fx.cmd(&args).await.unwrap_err().to_string();
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), before);
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// `[columns]` descriptions name output columns: `validate` names an unknown one by file and key.
#[tokio::test]
async fn validate_refuses_a_description_of_a_column_the_output_lacks() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    let spec = fx.dir().join("jobs/customer_value.toml");
    std::fs::write(
        &spec,
        "description = \"Value per customer.\"\n[columns]\norders = \"Completed orders.\"\nnope = \"Not there.\"\n",
    )
    .unwrap();
    let e = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        e.contains("customer_value.toml") && e.contains("columns.nope"),
        "{e}"
    );
    assert!(e.contains("`nope` is not a column of the job's output (columns: customer_id, acquisition_channel, orders, net_revenue)"), "{e}");
    assert!(!e.contains("columns.orders"), "{e}");
}

/// Every store request is counted: a run lists and reads its sources and writes its tables, and
/// the GETs are grouped by the table folder they read.
#[tokio::test]
async fn a_run_counts_its_object_store_requests_by_kind_and_table() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    let before = fx.stores.requests();
    fx.cmd(&["run", "--all"]).await.unwrap();
    let run = fx.stores.requests().since(&before);
    assert!(run.lists > 0 && run.writes > 0, "{run:?}");
    assert!(run.range_gets + run.tail_gets > 0, "{run:?}");
    let folders = fx.stores.gets_by_folder();
    assert!(
        folders.keys().any(|k| k.ends_with("/orders")),
        "{folders:?}"
    );
    assert!(
        folders.keys().any(|k| k.ends_with("/customer_value")),
        "{folders:?}"
    );
    // A query afterwards only reads.
    let before = fx.stores.requests();
    fx.cmd(&["query", "select count(*) from customer_value"])
        .await
        .unwrap();
    let query = fx.stores.requests().since(&before);
    assert_eq!(query.writes, 0, "{query:?}");
    assert!(query.total() > 0);
}

/// A run lists each source once, when it checks the source's contract, and every job that reads
/// the source plans with that listing; the next run lists again and reads the file that landed
/// in between.
#[tokio::test]
async fn a_run_lists_each_source_once_and_the_next_run_reads_new_files() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    let lists = |fx: &Fixture, source: &str| -> u64 {
        let by_prefix = fx.stores.lists_by_prefix();
        let listed = by_prefix
            .iter()
            .filter(|(p, _)| p.ends_with(&format!("/raw/{source}")));
        listed.map(|(_, n)| *n).sum()
    };
    fx.cmd(&["run", "--all"]).await.unwrap();
    // orders is read by daily_revenue and by customer_value.
    assert_eq!(lists(&fx, "orders"), 1, "{:?}", fx.stores.lists_by_prefix());
    assert_eq!(
        lists(&fx, "customers"),
        1,
        "{:?}",
        fx.stores.lists_by_prefix()
    );
    fx.assert_value_marts().await;
    fx.put_raw(
        "orders/dt=2026-02-03/part-0.parquet",
        parquet(&orders_batch(&[(6, 2, 300, 0, "completed")])),
    )
    .await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    assert_eq!(lists(&fx, "orders"), 2);
    assert_eq!(lists(&fx, "customers"), 2);
    assert_eq!(
        fx.rows("select * from customer_value where customer_id = 2")
            .await,
        "customer_id|acquisition_channel|orders|net_revenue\n2|social|2|23.50"
    );
}

/// `[output] sort_by`, `row_group_rows` and `bloom_filter` shape the written file: its rows in
/// that order, row groups of at most that many rows, and a bloom filter on the named column only.
/// A layout naming a column the output lacks is refused by `validate`, naming the key.
#[tokio::test]
async fn the_output_layout_orders_rows_sizes_row_groups_and_adds_bloom_filters() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    let spec = "description = \"Orders.\"\n[output]\nsort_by = [\"customer_id\", \"order_id\"]\n\
                row_group_rows = 2\nbloom_filter = [\"order_id\"]\n";
    write(fx.dir(), "jobs/order_lines.toml", spec);
    write(
        fx.dir(),
        "sql/order_lines.sql",
        "SELECT order_id, customer_id, gmv FROM orders",
    );
    fx.cmd(&["run", "order_lines"]).await.unwrap();
    let file = the_only_file(&fx, "order_lines").await;
    assert_row_groups_and_bloom_filters(&file);
    let batches: Vec<RecordBatch> = file.build().unwrap().map(|b| b.unwrap()).collect();
    let ids = |name: &str| -> Vec<i64> {
        let column = |b: &RecordBatch| b.column_by_name(name).unwrap().clone();
        let arrays: Vec<ArrayRef> = batches.iter().map(column).collect();
        let arrays: Vec<&dyn datafusion::arrow::array::Array> =
            arrays.iter().map(|a| a.as_ref()).collect();
        let all = datafusion::arrow::compute::concat(&arrays).unwrap();
        let all = all.as_any().downcast_ref::<Int64Array>().unwrap();
        all.values().to_vec()
    };
    // Orders 1 to 5 belong to customers 1, 2, 1, 3, 1.
    assert_eq!(ids("customer_id"), [1, 1, 1, 2, 3]);
    assert_eq!(ids("order_id"), [1, 3, 5, 2, 4]);

    // A Z-order rewrite by another column keeps the row groups and bloom filters.
    fx.cmd(&["optimize", "order_lines", "--zorder", "gmv"])
        .await
        .unwrap();
    assert_eq!(fx.version("order_lines").await, Some(1), "rewritten");
    assert_row_groups_and_bloom_filters(&the_only_file(&fx, "order_lines").await);

    let bad = spec.replace("[\"order_id\"]", "[\"order_ref\"]");
    write(fx.dir(), "jobs/order_lines.toml", &bad);
    let e = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        e.contains("order_lines.toml: output.bloom_filter: `order_ref` is not a column of the job's output (columns: order_id, customer_id, gmv)"),
        "{e}"
    );
}

/// The one Parquet file of `table`'s latest version, opened for reading.
async fn the_only_file(
    fx: &Fixture,
    table: &str,
) -> datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<bytes::Bytes> {
    let url = curated::table_url(&fx.curated, table).unwrap();
    let table = curated::open(&fx.stores, &url).await.unwrap().unwrap();
    let uris: Vec<String> = table.get_file_uris().unwrap().collect();
    assert_eq!(uris.len(), 1, "{uris:?}");
    let (store, path) = fx.stores.store_for(&Url::parse(&uris[0]).unwrap()).unwrap();
    let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
}

/// Five rows in row groups of 2, 2 and 1, with a bloom filter on `order_id` only.
fn assert_row_groups_and_bloom_filters(
    file: &datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<bytes::Bytes>,
) {
    let groups = file.metadata().row_groups();
    let rows: Vec<i64> = groups.iter().map(|g| g.num_rows()).collect();
    assert_eq!(rows, [2, 2, 1]);
    for group in groups {
        let bloom: Vec<(String, bool)> = group
            .columns()
            .iter()
            .map(|c| (c.column_path().string(), c.bloom_filter_offset().is_some()))
            .collect();
        let expected = [("order_id", true), ("customer_id", false), ("gmv", false)];
        assert_eq!(bloom, expected.map(|(c, b)| (c.to_string(), b)));
    }
}

/// With the read cache on (`auto` turns it on for a cloud store), each small source file costs
/// one GET for the whole run, however many jobs and reads touch it, and the tables are the ones a
/// run without it publishes.
#[tokio::test]
async fn the_read_cache_reads_each_small_file_once_per_run_with_the_same_rows() {
    let gets = |fx: &Fixture, table: &str| -> u64 {
        let folders = fx.stores.gets_by_folder();
        let found = folders.iter().find(|(k, _)| k.ends_with(table));
        found
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("{folders:?}"))
    };
    let plain = Fixture::new(Backend::Memory).unwrap();
    plain.write_hand_data().await;
    plain.cmd(&["run", "--all"]).await.unwrap();
    assert!(gets(&plain, "/orders") > 3 && gets(&plain, "/customers") > 1);
    assert_eq!(plain.stores.read_cache_stats().fills, 0, "off on memory://");

    let cached = Fixture::new(Backend::Memory).unwrap();
    cached.write_hand_data().await;
    cached
        .cmd(&["--read-cache", "64MiB", "run", "--all"])
        .await
        .unwrap();
    // Three order files and one customers file, read by two jobs each.
    assert_eq!(gets(&cached, "/orders"), 3);
    assert_eq!(gets(&cached, "/customers"), 1);
    let stats = cached.stores.read_cache_stats();
    assert!(stats.fills >= 4 && stats.hits > stats.fills, "{stats:?}");
    assert_eq!(cached.snapshot().await, plain.snapshot().await);
    cached.assert_value_marts().await;
}

/// A raw source's strings are read as views (short codes move and join as 16 bytes each), and the
/// curated table they go into keeps plain strings.
#[tokio::test]
async fn raw_strings_are_read_as_views_and_published_as_plain_strings() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    write(
        fx.dir(),
        "jobs/by_status.toml",
        "description = \"Channels.\"\n",
    );
    write(
        fx.dir(),
        "sql/by_status.sql",
        "SELECT acquisition_channel, arrow_typeof(acquisition_channel) AS read_as, \
         count(*) AS customers FROM customers GROUP BY 1, 2",
    );
    fx.cmd(&["run", "by_status"]).await.unwrap();
    assert_eq!(
        fx.rows(
            "SELECT acquisition_channel, read_as, arrow_typeof(acquisition_channel) AS stored_as, \
             customers FROM by_status ORDER BY 1"
        )
        .await,
        "acquisition_channel|read_as|stored_as|customers\n\
         search|Utf8View|Utf8|2\n\
         social|Utf8View|Utf8|1"
    );
}

/// channel_value reads customer_value, which the same run published: from the batches the run
/// kept (no Parquet read), and, run alone later, from the table's files; the same rows both ways.
#[tokio::test]
async fn a_later_job_reads_the_table_its_run_published_from_memory() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    fx.assert_value_marts().await;
    fx.cmd(&["run", "channel_value"]).await.unwrap();
    fx.assert_value_marts().await;
    let rows = fx
        .rows(
            "SELECT job, bytes_read > 0 AS read_files, output_version FROM _runs \
             WHERE job IN ('customer_value', 'channel_value') ORDER BY job, output_version",
        )
        .await;
    assert_eq!(
        rows,
        "job|read_files|output_version\n\
         channel_value|false|0\n\
         channel_value|true|1\n\
         customer_value|true|0"
    );
}

#[tokio::test]
async fn a_run_records_each_jobs_peak_memory_and_spilled_bytes() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    // The 5 hand-made orders x 100,000: a sort of 500,000 rows under a 24 MiB limit spills.
    write(
        fx.dir(),
        "retention.toml",
        "[engine]\nmemory_limit = \"24MiB\"\n[datafusion]\n\"execution.sort_spill_reservation_bytes\" = \"1048576\"\n",
    );
    write(
        fx.dir(),
        "jobs/slow.toml",
        "description = \"Sorted keys.\"\n",
    );
    write(
        fx.dir(),
        "sql/slow.sql",
        "SELECT o.order_id, r.v, (o.order_id * 7919 + r.v * 104729) % 1000003 AS k\n\
         FROM orders o CROSS JOIN (SELECT unnest(range(0, 100000)) AS v) r\nORDER BY k",
    );
    let outcome = fx.cmd(&["run", "--all"]).await;
    assert!(
        outcome.is_ok(),
        "{}",
        fx.rows("SELECT job, error FROM _runs").await
    );
    // The batches waiting in a repartition's channels are counted but never refused
    // (engine/memory.rs), so the peak may pass the limit by what is in flight: once 0.8 MiB, when
    // the sort of one stream is spread over the cores (engine/parallel_sort.rs) on a loaded machine.
    let rows = fx
        .rows(
            "SELECT job, rows_written, peak_memory_bytes > 0 AS held, spilled_bytes > 0 AS spilled, \
             peak_memory_bytes <= 26 * 1024 * 1024 AS within_limit FROM _runs ORDER BY job",
        )
        .await;
    assert_eq!(
        rows,
        "job|rows_written|held|spilled|within_limit\n\
         channel_value|2|true|false|true\n\
         customer_value|3|true|false|true\n\
         daily_revenue|2|true|false|true\n\
         slow|500000|true|true|true"
    );
}

/// Two sides of 3M keys each (0..2,999,999, built from 3,000 x 1,000), joined on the key: a hash
/// join's build side of 3M rows does not fit in 24 MiB and cannot spill; a sort-merge join sorts
/// both sides, spilling.
const WIDE_JOIN: &str = "WITH i AS (SELECT unnest(range(0, 3000)) AS i),\n\
     j AS (SELECT unnest(range(0, 1000)) AS j),\n\
     a AS (SELECT i * 1000 + j AS k FROM i CROSS JOIN j),\n\
     b AS (SELECT i * 1000 + j AS k, (i * 1000 + j) % 7 AS r FROM i CROSS JOIN j)\n\
     SELECT count(*) AS matched, sum(a.k) AS key_total, sum(b.r) AS r_total\n\
     FROM a JOIN b ON a.k = b.k";

#[tokio::test]
async fn a_job_out_of_memory_with_hash_joins_runs_again_with_sort_merge_joins() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    memory_limited(&fx, "24MiB");
    write(
        fx.dir(),
        "jobs/joined.toml",
        "description = \"A join too wide for memory.\"\n",
    );
    // One partition (the retry plans two: a sort-merge join needs repartitioned inputs) and
    // batches of 8,192 rows, so the sorts' merges at this tiny scale stay inside the pool on any
    // machine.
    write(fx.dir(), "sql/joined.sql", WIDE_JOIN);
    let outcome = fx.cmd(&["run", "joined"]).await;
    assert!(
        outcome.is_ok(),
        "{}",
        fx.rows("SELECT job, error FROM _runs").await
    );
    // sum(0..2,999,999) = 4,499,998,500,000; the residues mod 7 of 0..2,999,999: 428,571 full
    // cycles of 21, then 0, 1, 2 (3).
    assert_eq!(
        fx.rows("SELECT * FROM joined").await,
        "matched|key_total|r_total\n3000000|4499998500000|8999994"
    );
    assert_eq!(
        fx.rows(
            "SELECT job, status, spilled_bytes > 0 AS spilled, memory_plan, memory_limit_bytes \
             FROM _runs"
        )
        .await,
        "job|status|spilled|memory_plan|memory_limit_bytes\njoined|succeeded|true|spilling|25165824"
    );
    // Run again unchanged under the same limit, the job starts with the spilling plan.
    let text = logged_run(&fx, "joined").await;
    assert!(text.contains("starting with the spilling plan"), "{text}");
    assert!(!text.contains("out of memory"), "{text}");
    // With its SQL changed, it starts with the defaults again, runs out of memory and retries.
    write(
        fx.dir(),
        "sql/joined.sql",
        &format!("{WIDE_JOIN}\n-- changed"),
    );
    let text = logged_run(&fx, "joined").await;
    assert!(!text.contains("starting with the spilling plan"), "{text}");
    assert!(
        text.contains("out of memory; running the job again"),
        "{text}"
    );
    assert_eq!(
        fx.rows("SELECT memory_plan, count(*) AS runs FROM _runs GROUP BY memory_plan")
            .await,
        "memory_plan|runs\nspilling|3"
    );
    // The same job with hash joins alone does not fit: the retry is what made it succeed.
    let ctx = datafusion::prelude::SessionContext::new_with_config_rt(
        datafusion::prelude::SessionConfig::new()
            .with_target_partitions(1)
            .with_batch_size(8192),
        datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(24 * 1024 * 1024, 1.0)
            .build_arc()
            .unwrap(),
    );
    let err = ctx
        .sql(WIDE_JOIN)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Resources exhausted"), "{err}");
}

/// 400,000 orders joined to themselves under 16 MiB: the planner's statistics (exact row counts
/// from the Parquet footers) put the hash join's build side at more than 400,000 x 24 bytes, over
/// half the limit, so the job starts with the spilling plan and never tries the hash join.
#[tokio::test]
async fn a_job_whose_hash_join_build_side_would_not_fit_starts_with_the_spilling_plan() {
    let sql = "SELECT count(*) AS pairs, sum(a.gmv) AS gmv \
               FROM orders a JOIN orders b ON a.order_id = b.order_id";
    let fx = many_orders_job("16MiB", "paired", "Orders paired.", sql).await;
    let text = logged_run(&fx, "paired").await;
    assert!(
        text.contains("build sides or its largest sort would take more than half"),
        "{text}"
    );
    assert!(!text.contains("out of memory"), "{text}");
    // 400,000 orders of 1.00 and the hand data's five (10.00 + 20.50 + 5.25 + 100.00 + 7.75).
    assert_eq!(
        fx.rows("SELECT * FROM paired").await,
        "pairs|gmv\n400005|400143.50"
    );
    assert_eq!(
        fx.rows("SELECT memory_plan, memory_limit_bytes FROM _runs")
            .await,
        "memory_plan|memory_limit_bytes\nspilling|16777216"
    );
}

/// An aggregate over 400,000 orders under 4 MiB: its input, from the Parquet footers' row counts,
/// is larger than the limit, so it starts with the spilling plan (no partial aggregation, shared
/// memory) and never tries DataFusion's defaults.
#[tokio::test]
async fn a_job_that_reads_more_than_its_memory_limit_starts_with_the_spilling_plan() {
    let fx = many_orders_job(
        "4MiB",
        "by_status",
        "Orders by status.",
        "SELECT status, count(*) AS orders, sum(gmv) AS gmv FROM orders GROUP BY status",
    )
    .await;
    let text = logged_run(&fx, "by_status").await;
    assert!(
        text.contains("its input is larger than the memory limit"),
        "{text}"
    );
    assert!(!text.contains("out of memory"), "{text}");
    // The hand data: 4 completed (10.00 + 20.50 + 100.00 + 7.75) and 1 cancelled (5.25).
    assert_eq!(
        fx.rows("SELECT * FROM by_status ORDER BY status").await,
        "status|orders|gmv\ncancelled|1|5.25\ncompleted|400004|400138.25"
    );
    assert_eq!(
        fx.rows("SELECT memory_plan FROM _runs").await,
        "memory_plan\nspilling"
    );
}

/// A window over 400,000 orders in one order, under 5 MiB: the job reads less than the limit, but
/// its sort would hold more than half of it, and a sort that kept its input in memory cannot spill
/// its merge. It starts with the spilling plan.
#[tokio::test]
async fn a_job_whose_sort_would_take_more_than_half_its_memory_starts_with_the_spilling_plan() {
    let fx = many_orders_job(
        "5MiB",
        "ranked",
        "Orders ranked.",
        "SELECT order_id, row_number() OVER (ORDER BY order_id DESC) AS rank FROM orders",
    )
    .await;
    let text = logged_run(&fx, "ranked").await;
    let estimate = |name: &str| -> u64 {
        let at = text
            .find(&format!("{name}="))
            .unwrap_or_else(|| panic!("{text}"));
        let digits = text[at + name.len() + 1..].split(|c: char| !c.is_ascii_digit());
        digits.into_iter().next().unwrap().parse().unwrap()
    };
    let limit = 5 * 1024 * 1024;
    assert!(text.contains("starting with the spilling plan"), "{text}");
    assert!(estimate("input_bytes") <= limit, "{text}");
    assert!(estimate("sort_input_bytes") > limit / 2, "{text}");
    assert!(!text.contains("out of memory"), "{text}");
    // 400,005 orders (the hand data's five, 1 to 5, and 101 to 400,100): the highest ranks first.
    assert_eq!(
        fx.rows(
            "SELECT count(*) AS n, sum(rank) AS rank_total, \
             max(CASE WHEN rank = 1 THEN order_id END) AS first, \
             max(CASE WHEN rank = 400005 THEN order_id END) AS last FROM ranked"
        )
        .await,
        "n|rank_total|first|last\n400005|80002200015|400100|1"
    );
    assert_eq!(
        fx.rows("SELECT memory_plan FROM _runs").await,
        "memory_plan\nspilling"
    );
}

#[tokio::test]
async fn a_job_that_cannot_fit_fails_as_resources_exhausted_and_publishes_nothing() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    write(
        fx.dir(),
        "retention.toml",
        "[engine]\nmemory_limit = \"24MiB\"\n",
    );
    // Every sort holds 32 MiB back for its merge: no sort can start under 24 MiB, in either
    // attempt (with hash joins, then with sort-merge joins).
    write(
        fx.dir(),
        "retention.toml",
        "[engine]\nmemory_limit = \"24MiB\"\n\
         [datafusion]\n\"execution.sort_spill_reservation_bytes\" = \"33554432\"\n",
    );
    write(
        fx.dir(),
        "jobs/hoard.toml",
        "description = \"Sorted keys.\"\n",
    );
    write(
        fx.dir(),
        "sql/hoard.sql",
        "SELECT i * 1000 + j AS k\n\
         FROM (SELECT unnest(range(0, 3000)) AS i) CROSS JOIN (SELECT unnest(range(0, 1000)) AS j)\n\
         ORDER BY k DESC",
    );
    let err = fx.cmd(&["run", "hoard"]).await.unwrap_err().to_string();
    assert!(err.contains("1 of 1 job(s) failed"), "{err}");
    assert_eq!(fx.version("hoard").await, None);
    let runs = fx.rows("SELECT job, status, error FROM _runs").await;
    assert!(
        runs.starts_with("job|status|error\nhoard|failed|job `hoard`: "),
        "{runs}"
    );
    // DataFusion's error, from the second attempt: the job's memory shared (engine/share_pool.rs).
    assert!(
        runs.contains("Resources exhausted: Failed to allocate"),
        "{runs}"
    );
    assert!(runs.contains("share(the job holds"), "{runs}");
}

/// The hand data and 400,000 more completed orders of 1.00 (ids 101 to 400,100, customer 1).
async fn with_many_orders() -> Fixture {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    let many: Vec<(i64, i64, i128, i128, &str)> = (1..=400_000)
        .map(|i| (100 + i, 1, 100, 0, "completed"))
        .collect();
    fx.put_raw(
        "orders/dt=2026-03-01/part-0.parquet",
        parquet(&orders_batch(&many)),
    )
    .await;
    fx
}

/// [`with_many_orders`] under `limit` of memory (see [`memory_limited`]), with one job.
async fn many_orders_job(limit: &str, job: &str, description: &str, sql: &str) -> Fixture {
    let fx = with_many_orders().await;
    memory_limited(&fx, limit);
    let spec = format!("description = \"{description}\"\n");
    write(fx.dir(), &format!("jobs/{job}.toml"), &spec);
    write(fx.dir(), &format!("sql/{job}.sql"), sql);
    fx
}

/// A project whose runs have `limit` of memory, one partition and batches of 8,192 rows.
fn memory_limited(fx: &Fixture, limit: &str) {
    let toml = format!(
        "[engine]\nmemory_limit = \"{limit}\"\ntarget_partitions = 1\n\
         [datafusion]\n\"execution.batch_size\" = \"8192\"\n"
    );
    write(fx.dir(), "retention.toml", &toml);
}

/// Run `job`, which must succeed, and return what it logged.
async fn logged_run(fx: &Fixture, job: &str) -> String {
    let log = LogCapture::default();
    {
        let _guard = log.install();
        fx.cmd(&["run", job]).await.unwrap();
    }
    log.text()
}

/// The log lines written while its guard is installed (a current-thread test runtime runs every
/// task on the test's thread, where the guard applies).
#[derive(Clone, Default)]
struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
