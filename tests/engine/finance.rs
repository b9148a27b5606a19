//! Month close and export on a generated lake: frozen snapshots, late postings, re-open, a close
//! that dies before its commit point, `[close]` validation, CSV and XLSX export.

use super::*;
use crate::stores::FaultyStore;

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
    let files = retention::export::csv::export_month_csv(
        &ws,
        "budget_reconciliation",
        &month.parse().unwrap(),
        &out,
    )
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

    // A month that does not exist is a clear error (exit code 2) and writes nothing: `--month`
    // is parsed into a `Month` before anything runs.
    let err = retention::values::Month::parse("2026-13").unwrap_err();
    assert_eq!(
        err.to_string(),
        "--month: month: `2026-13` is not a month: expected YYYY-MM with a month from 01 to 12"
    );
    assert_eq!(retention::cli::exit_code(&err), 2);
    assert!(!lake.path().join("bad").exists());
}

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
    action: retention::close::month_close::Action,
    minute: u32,
) -> retention::close::month_close::Request {
    use chrono::TimeZone;
    retention::close::month_close::Request {
        month: retention::values::Month::parse(month).unwrap(),
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
    req: &retention::close::month_close::Request,
) -> retention::close::month_close::Outcome {
    let plan = retention::close::month_close::plan(ws, req).await.unwrap();
    retention::close::month_close::execute(ws.clone(), &plan, req)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_month_is_frozen_and_late_entries_adjust_the_next_open_month() {
    use retention::close::month_close::{Action, Outcome};
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
        retention::generate::ledger_schema(),
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
    let files = retention::export::xlsx::export_month_xlsx(
        &ws,
        "budget_reconciliation",
        &month.parse().unwrap(),
        &out,
    )
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
    // (`close-month` parses the month into a `Month` before anything runs.)
    let err = retention::values::Month::parse("2026-13").unwrap_err();
    assert_eq!(
        err.to_string(),
        "--month: month: `2026-13` is not a month: expected YYYY-MM with a month from 01 to 12"
    );
    assert_eq!(retention::cli::exit_code(&err), 2);

    // Re-opening needs a reason, is recorded with who/when/why, and keeps the old snapshot.
    let no_reason = retention::close::month_close::plan(
        &ws,
        &close_request(month, Action::Reopen { reason: " ".into() }, 2),
    )
    .await
    .unwrap();
    let err = retention::close::month_close::execute(
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

/// A close that dies after writing its snapshots but before its log row (the commit point)
/// leaves the month open; the next close numbers past the orphaned snapshot, which is never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_dies_before_its_log_row_is_never_read() {
    use retention::close::month_close::{Action, Outcome};
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
        Arc::new(FaultyStore::refusing(
            Arc::new(object_store::local::LocalFileSystem::new()),
            &["_month_close"],
        )),
    );
    let over = Overrides::with_storage(
        Some(
            Url::from_directory_path(lake.path().join("raw"))
                .unwrap()
                .to_string(),
        ),
        Some(
            Url::from_directory_path(lake.path().join("curated"))
                .unwrap()
                .to_string(),
        ),
    );
    let project = Project::load(Path::new(env!("CARGO_MANIFEST_DIR")), &over).unwrap();
    let dying = Arc::new(retention::app::workspace(project, stores).unwrap());
    let req = close_request(month, Action::Close, 0);
    let plan = retention::close::month_close::plan(&dying, &req)
        .await
        .unwrap();
    let err = retention::close::month_close::execute(dying.clone(), &plan, &req)
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
