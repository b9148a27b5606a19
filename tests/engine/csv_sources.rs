//! CSV sources (exact decimals, header and value errors by file and line) and table properties.

use super::*;

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
