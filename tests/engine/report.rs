//! `retention report`: the page's figures hold exactly the curated tables' rows (recomputed here
//! from the tables' own rows, money to the cent), its footer names the Delta versions read,
//! `--month` cuts every figure, it lands in the curated store's `reports/`, it refuses a lake
//! whose tables are not published, and headless Chromium renders it with no request and no
//! console error.

use std::collections::BTreeMap;
use std::process::Command;

use chrono::DateTime;
use retention::report::data::{Frame, frame};
use serde_json::Value;

use super::*;

/// A generated lake with every job run, cohort_retention twice (so its version is 1).
async fn report_lake() -> (TempDir, Arc<Workspace>) {
    let opts = retention::generate::GenerateOptions {
        seed: 23,
        customers: 1200,
        months: 9,
        ..Default::default()
    };
    let (lake, ws, _) = generated_lake(opts, &[]).await;
    run_jobs(&ws, &["cohort_retention"]).await;
    (lake, ws)
}

/// Run `retention ARGS` in-process on the workspace's lake.
async fn report_cmd(ws: &Workspace, args: &[&str]) -> Result<(), Error> {
    let mut argv: Vec<String> = vec![
        "retention".into(),
        "-C".into(),
        env!("CARGO_MANIFEST_DIR").into(),
        "--raw".into(),
        ws.engine.project.raw.to_string(),
        "--curated".into(),
        ws.engine.project.curated.to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    run(Cli::try_parse_from(argv).unwrap(), Stores::default()).await
}

/// The rows of `sql` over the curated tables.
async fn rows(ws: &Workspace, sql: &str) -> Frame {
    let ctx = ws.query_session().await.unwrap();
    frame(&ctx.sql(sql).await.unwrap().collect().await.unwrap()).unwrap()
}

/// The page's JSON island.
fn island(html: &str) -> Value {
    let start = html.find("id=\"report-data\">").expect("island") + "id=\"report-data\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

/// A figure's rows as maps of column to exact text.
fn figure_rows(doc: &Value, id: &str) -> Vec<BTreeMap<String, Option<String>>> {
    let f = &doc["figures"][id];
    let columns: Vec<String> = f["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("no figure {id}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    f["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            columns
                .iter()
                .zip(r.as_array().unwrap())
                .map(|(c, v)| (c.clone(), v.as_str().map(String::from)))
                .collect()
        })
        .collect()
}

fn text<'a>(row: &'a BTreeMap<String, Option<String>>, column: &str) -> &'a str {
    row[column]
        .as_deref()
        .unwrap_or_else(|| panic!("{column} is null"))
}

fn num(row: &BTreeMap<String, Option<String>>, column: &str) -> f64 {
    text(row, column).parse().unwrap()
}

/// Exact decimal text with two decimals as cents.
fn cents(text: &str) -> i128 {
    let negative = text.starts_with('-');
    let (whole, frac) = text
        .trim_start_matches('-')
        .split_once('.')
        .unwrap_or_else(|| panic!("not money: {text}"));
    assert_eq!(frac.len(), 2, "{text}");
    let c = whole.parse::<i128>().unwrap() * 100 + frac.parse::<i128>().unwrap();
    if negative { -c } else { c }
}

fn cents_text(c: i128) -> String {
    let sign = if c < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", c.abs() / 100, c.abs() % 100)
}

/// `num / den` rounded half away from zero.
fn div_round(num: i128, den: i128) -> i128 {
    let (q, r) = (num / den, num % den);
    if 2 * r.abs() >= den {
        q + num.signum()
    } else {
        q
    }
}

/// The svg of figure `id` in the page.
fn figure_svg<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("<figure id=\"{id}\">")).unwrap();
    let end = start + html[start..].find("</figure>").unwrap();
    &html[start..end]
}

/// The text of every `<text>` element of an SVG (plotters writes it on its own line).
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| Some(t[t.find('>')? + 1..t.find("</text>")?].trim().to_string()))
        .collect()
}

/// Sum `value` columns of `frame` per key columns.
fn sums(
    frame: &Frame,
    keys: &[&str],
    values: &[&str],
    money: bool,
) -> BTreeMap<Vec<String>, Vec<i128>> {
    let mut out: BTreeMap<Vec<String>, Vec<i128>> = BTreeMap::new();
    for i in 0..frame.rows.len() {
        let key = keys
            .iter()
            .map(|k| frame.get(i, k).text().to_string())
            .collect();
        let acc = out.entry(key).or_insert_with(|| vec![0; values.len()]);
        for (a, v) in acc.iter_mut().zip(values) {
            // As SQL's sum: NULLs add nothing.
            let Some(t) = frame.get(i, v).text.as_deref() else {
                continue;
            };
            *a += if money {
                cents(t)
            } else {
                t.parse::<i128>().unwrap()
            };
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_figures_hold_the_curated_tables_rows() {
    let (lake, ws) = report_lake().await;
    let out = lake.path().join("out");
    report_cmd(&ws, &["report", "--out", out.to_str().unwrap()])
        .await
        .unwrap();
    let file = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("retention_report_20") && name.ends_with(".html"),
        "{name}"
    );
    let html = std::fs::read_to_string(&file).unwrap();
    let doc = island(&html);

    // Self-contained: no fetch of any kind; the only URL is the SVG namespace.
    for banned in ["<link", " src=", "url(", "@import", "https:"] {
        assert!(!html.contains(banned), "the page contains {banned}");
    }
    assert_eq!(
        html.matches("http:").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );
    assert!(html.contains("default-src 'none'"));

    // Footer and island: every table read, at its Delta version (cohort_retention ran twice).
    let tables: Vec<(String, i64)> = doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(tables.len(), 8);
    for (name, version) in &tables {
        let url = ws.table_url(name).unwrap();
        let table = curated::open(&ws.engine.stores, &url)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(table.version().unwrap() as i64, *version, "{name}");
        assert!(
            html.contains(&format!("{name} v{version}")),
            "footer lacks {name}"
        );
    }
    assert!(tables.contains(&("cohort_retention".into(), 1)));

    // Every figure has a caption, axis descriptions and a reading.
    let figures = doc["figures"].as_object().unwrap();
    assert_eq!(figures.len(), 11);
    for (id, f) in figures {
        assert!(f["reading"].as_str().unwrap().len() > 30, "{id}");
        assert!(figure_svg(&html, id).contains("<svg"), "{id}");
    }

    check_retention(&ws, &doc, &html).await;
    check_ltv(&ws, &doc).await;
    check_churn(&ws, &doc, &html).await;
    check_recovery_and_programs(&ws, &doc).await;
    check_budget_and_close(&ws, &doc).await;
    check_sla(&ws, &doc).await;
}

/// The heatmap's cells are the cohorts' summed sizes and actives, and it is a triangle: each
/// cohort reaches exactly the months up to the last activity month.
async fn check_retention(ws: &Workspace, doc: &Value, html: &str) {
    let raw = rows(ws, "SELECT cohort_month, months_since_first, activity_month, cohort_size, active_customers FROM cohort_retention").await;
    let expected = sums(
        &raw,
        &["cohort_month", "months_since_first"],
        &["cohort_size", "active_customers"],
        false,
    );
    let cells = figure_rows(doc, "retention_heatmap");
    assert_eq!(cells.len(), expected.len());
    let last = raw
        .column("activity_month")
        .iter()
        .map(|c| c.text().to_string())
        .max()
        .unwrap();
    let month_index =
        |m: &str| m[..4].parse::<i32>().unwrap() * 12 + m[5..].parse::<i32>().unwrap();
    let mut reach: BTreeMap<String, i32> = BTreeMap::new();
    for c in &cells {
        let key = vec![
            text(c, "cohort_month").to_string(),
            text(c, "months_since_first").to_string(),
        ];
        let [size, active] = expected[&key][..] else {
            unreachable!()
        };
        assert_eq!(num(c, "cohort_size") as i128, size);
        assert_eq!(num(c, "active_customers") as i128, active);
        assert!((num(c, "retention_rate") - active as f64 / size as f64).abs() < 5e-5);
        let m = num(c, "months_since_first") as i32;
        let r = reach.entry(key[0].clone()).or_insert(0);
        *r = (*r).max(m);
    }
    for (cohort, months) in &reach {
        assert_eq!(
            *months,
            month_index(&last) - month_index(cohort),
            "cohort {cohort}"
        );
    }
    // Month 0 is everyone: its cells print 100.
    let labels = svg_texts(figure_svg(html, "retention_heatmap"));
    assert_eq!(labels.iter().filter(|t| *t == "100").count(), reach.len());
}

/// LTV per customer by channel and month = summed cumulative net revenue / summed cohort size,
/// to the cent.
async fn check_ltv(ws: &Workspace, doc: &Value) {
    let raw = rows(ws, "SELECT acquisition_channel, months_since_first, cohort_size, cumulative_net_revenue FROM cohort_retention").await;
    let revenue = sums(
        &raw,
        &["acquisition_channel", "months_since_first"],
        &["cumulative_net_revenue"],
        true,
    );
    let sizes = sums(
        &raw,
        &["acquisition_channel", "months_since_first"],
        &["cohort_size"],
        false,
    );
    let points = figure_rows(doc, "ltv_by_channel");
    assert_eq!(points.len(), revenue.len());
    for p in &points {
        let key = vec![
            text(p, "acquisition_channel").to_string(),
            text(p, "months_since_first").to_string(),
        ];
        assert_eq!(cents(text(p, "cumulative_net_revenue")), revenue[&key][0]);
        let expected = cents_text(div_round(revenue[&key][0], sizes[&key][0]));
        assert_eq!(text(p, "net_revenue_per_customer"), expected, "{key:?}");
    }
}

/// Churn bars are churn_root_cause's rates and Wilson bounds, digit for digit, labelled in the SVG.
async fn check_churn(ws: &Workspace, doc: &Value, html: &str) {
    let table = rows(ws, "SELECT first_order_experience, churn_rate, churn_rate_low, churn_rate_high FROM churn_root_cause WHERE churn_rate IS NOT NULL ORDER BY churn_rate DESC, first_order_experience").await;
    let bars = figure_rows(doc, "churn_by_root_cause");
    assert_eq!(bars.len(), table.rows.len());
    assert!(bars.len() >= 4);
    let labels = svg_texts(figure_svg(html, "churn_by_root_cause"));
    for (i, b) in bars.iter().enumerate() {
        for col in [
            "first_order_experience",
            "churn_rate",
            "churn_rate_low",
            "churn_rate_high",
        ] {
            assert_eq!(text(b, col), table.get(i, col).text());
        }
        assert!(labels.contains(&format!("{:.1}%", num(b, "churn_rate") * 100.0)));
        assert!(
            labels
                .iter()
                .any(|l| l == text(b, "first_order_experience"))
        );
    }
}

async fn check_recovery_and_programs(ws: &Workspace, doc: &Value) {
    let raw = rows(ws, "SELECT issue_type, CAST(compensated AS VARCHAR) AS compensated, cases_observed_90d, repurchased_90d FROM experience_recovery").await;
    let expected = sums(
        &raw,
        &["issue_type", "compensated"],
        &["cases_observed_90d", "repurchased_90d"],
        false,
    );
    let bars = figure_rows(doc, "recovery_by_issue");
    assert_eq!(bars.len(), expected.len());
    for b in &bars {
        let key = vec![
            text(b, "issue_type").to_string(),
            text(b, "compensated").to_string(),
        ];
        assert_eq!(num(b, "cases_observed_90d") as i128, expected[&key][0]);
        assert_eq!(num(b, "repurchased_90d") as i128, expected[&key][1]);
    }

    let raw = rows(ws, "SELECT program_name, spend, incremental_gross_margin FROM program_roi WHERE window_complete").await;
    let money = sums(
        &raw,
        &["program_name"],
        &["spend", "incremental_gross_margin"],
        true,
    );
    let programs = figure_rows(doc, "program_returns");
    assert_eq!(programs.len(), money.len());
    assert!(programs.len() >= 3);
    for p in &programs {
        let [spend, margin] = money[&vec![text(p, "program_name").to_string()]][..] else {
            unreachable!()
        };
        assert_eq!(cents(text(p, "spend")), spend);
        if p["roi"].is_some() {
            assert!((num(p, "roi") - (margin - spend) as f64 / spend as f64).abs() < 6e-5);
        }
    }
}

/// Budget bars: per month, planned and actual summed to the cent, variance = actual − planned;
/// the open items are every exception of a month not closed.
async fn check_budget_and_close(ws: &Workspace, doc: &Value) {
    let raw = rows(
        ws,
        "SELECT month, planned, actual FROM budget_reconciliation",
    )
    .await;
    let expected = sums(&raw, &["month"], &["planned", "actual"], true);
    let months = figure_rows(doc, "budget_against_actual");
    assert_eq!(months.len(), expected.len());
    for m in &months {
        let [planned, actual] = expected[&vec![text(m, "month").to_string()]][..] else {
            unreachable!()
        };
        assert_eq!(cents(text(m, "planned")), planned);
        assert_eq!(cents(text(m, "actual")), actual);
        assert_eq!(cents(text(m, "variance")), actual - planned);
    }
    let open = rows(ws, "SELECT count(*) AS n FROM reconciliation_exceptions e JOIN close_candidates c USING (month) WHERE c.status <> 'closed'").await;
    let listed = doc["listings"]["open_items"]["rows"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed as f64, open.get(0, "n").number.unwrap());
    assert!(listed > 0);
}

async fn check_sla(ws: &Workspace, doc: &Value) {
    let raw = rows(
        ws,
        "SELECT order_month, shipped_orders, on_time_orders, lost_orders FROM fulfillment_sla",
    )
    .await;
    let expected = sums(
        &raw,
        &["order_month"],
        &["shipped_orders", "on_time_orders", "lost_orders"],
        false,
    );
    let months = figure_rows(doc, "sla_delivery");
    assert_eq!(months.len(), expected.len());
    for m in &months {
        let [shipped, on_time, lost] = expected[&vec![text(m, "order_month").to_string()]][..]
        else {
            unreachable!()
        };
        assert_eq!(num(m, "shipped_orders") as i128, shipped);
        assert!((num(m, "on_time_rate") - on_time as f64 / shipped as f64).abs() < 5e-5);
        assert!((num(m, "lost_rate") - lost as f64 / shipped as f64).abs() < 5e-5);
    }
}

/// `--month` cuts every monthly figure at that month and names the file after it; without
/// `--out` the page goes to the curated store's `reports/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_month_cuts_every_figure_and_lands_in_the_store() {
    let (lake, ws) = report_lake().await;
    // A month in the middle of the lake's.
    let all = rows(
        &ws,
        "SELECT DISTINCT month FROM budget_reconciliation ORDER BY month",
    )
    .await;
    let month = all.rows[all.rows.len() / 2][0].text().to_string();
    let month = month.as_str();
    let out = lake.path().join("out");
    report_cmd(
        &ws,
        &["report", "--month", month, "--out", out.to_str().unwrap()],
    )
    .await
    .unwrap();
    let html = std::fs::read_to_string(out.join(format!("retention_report_{month}.html"))).unwrap();
    let doc = island(&html);
    assert_eq!(doc["month"], month);
    let checks = [
        ("retention_heatmap", "cohort_month"),
        ("budget_against_actual", "month"),
        ("sla_delivery", "order_month"),
    ];
    let months = |id: &str, col: &str| -> Vec<String> {
        figure_rows(&doc, id)
            .iter()
            .map(|r| text(r, col).to_string())
            .collect()
    };
    for (id, col) in checks {
        let seen = months(id, col);
        assert!(seen.iter().all(|m| m.as_str() <= month), "{id}: {seen:?}");
        assert!(seen.iter().any(|m| m == month), "{id} lacks {month}");
    }
    let budget = rows(
        &ws,
        &format!(
            "SELECT count(DISTINCT month) AS n FROM budget_reconciliation WHERE month <= '{month}'"
        ),
    )
    .await;
    assert_eq!(
        months("budget_against_actual", "month").len() as f64,
        budget.get(0, "n").number.unwrap()
    );

    report_cmd(&ws, &["report"]).await.unwrap();
    let reports = lake.path().join("curated").join("reports");
    let names: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("retention_report_") && names[0].ends_with(".html"));
    assert!(
        std::fs::read_to_string(reports.join(&names[0]))
            .unwrap()
            .contains("report-data")
    );
}

/// The weekly report under the daemon: two daemons ensure the same slot of `[report]` (Monday
/// 08:00 in the repository's retention.toml); one writes `reports/retention_report_<day>.html`
/// once, and both see the slot succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_report_is_written_once_per_slot_by_one_of_two_daemons() {
    use retention::serve::daemon::{Daemon, DaemonSettings};
    use retention::serve::slots;

    let (lake, ws) = report_lake().await;
    let slot = DateTime::parse_from_rfc3339("2026-11-30T08:00:00Z")
        .unwrap()
        .to_utc();
    let cron = slots::report_cron(&ws)
        .unwrap()
        .expect("retention.toml schedules the report");
    assert_eq!(cron.latest(slot + chrono::Duration::minutes(3)), Some(slot));
    let daemon = |id: &str| {
        let over = Overrides::with_storage(
            Some(ws.engine.project.raw.to_string()),
            Some(ws.engine.project.curated.to_string()),
        );
        let project = Project::load(Path::new(env!("CARGO_MANIFEST_DIR")), &over).unwrap();
        let clock = Arc::new(retention::clock::FixedClock(
            slot + chrono::Duration::seconds(5),
        ));
        let engine = retention::app::engine(project, Stores::default())
            .unwrap()
            .with_clock(clock);
        let settings = DaemonSettings {
            daemon_id: id.into(),
            max_concurrent: 1,
            poll: std::time::Duration::from_millis(20),
            retry_delay: std::time::Duration::from_millis(10),
            lease_margin: retention::project::run_policy::LEASE_MARGIN,
        };
        Daemon::new(Arc::new(Workspace::load(engine).unwrap()), settings).unwrap()
    };
    let (a, b) = (daemon("a"), daemon("b"));
    let (da, db) = tokio::join!(
        retention::serve::report::ensure(&a, slot),
        retention::serve::report::ensure(&b, slot)
    );
    let (da, db) = (da.unwrap(), db.unwrap());
    assert_eq!(da, db);
    assert_eq!(da.outcome, "succeeded");
    assert_eq!(da.token, 1);
    let reports = lake.path().join("curated").join("reports");
    let names: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["retention_report_2026-11-30.html"]);
    let doc = island(&std::fs::read_to_string(reports.join(&names[0])).unwrap());
    assert_eq!(doc["generated_at"], "2026-11-30T08:00:05+00:00");
    // The slot is done: a third ensure writes nothing more.
    let again = retention::serve::report::ensure(&a, slot).await.unwrap();
    assert_eq!(again, da);
}

/// A lake whose tables are not published: the error names the first missing table and the
/// command to run, and nothing is written. A month that is not one is refused by the parser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_refuses_unpublished_tables_and_bad_months() {
    let opts = retention::generate::GenerateOptions {
        seed: 3,
        customers: 200,
        months: 3,
        ..Default::default()
    };
    let (lake, ws, _) = generated_lake(opts, &["order_experience"]).await;
    let out = lake.path().join("out");
    let e = report_cmd(&ws, &["report", "--out", out.to_str().unwrap()])
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("`cohort_retention`") && message.contains("run --all"),
        "{message}"
    );
    assert_ne!(e.exit_code(), 0);
    assert!(!out.exists());

    let argv = ["retention", "report", "--month", "2026-13"];
    let e = Cli::try_parse_from(argv).unwrap_err().to_string();
    assert!(e.contains("2026-13") && e.contains("YYYY-MM"), "{e}");
}

/// Headless Chromium (Debian's, driven by Playwright: .ci/report_browser.py) opens the page: no
/// request leaves it, no console error or warning, every chart is laid out, the JSON island
/// parses, and the screenshot is a picture, not a blank page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_renders_in_headless_chromium_without_requests_or_errors() {
    let ready = std::path::Path::new("/usr/bin/chromium").exists()
        && Command::new("python3")
            .args(["-c", "import playwright, PIL"])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        skip("needs Debian chromium and PyPI playwright + pillow (.ci/run installs them)");
        return;
    }
    let (lake, ws) = report_lake().await;
    let out = lake.path().join("out");
    report_cmd(&ws, &["report", "--out", out.to_str().unwrap()])
        .await
        .unwrap();
    let page = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let shot = lake.path().join("report.png");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/report_browser.py");
    let o = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(&page)
            .arg(&shot)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let seen: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(seen["requests"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["console"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["svgs"], 11, "{seen}");
    assert_eq!(seen["island"].as_array().unwrap().len(), 11, "{seen}");
    let shot = &seen["screenshot"];
    assert!(shot["height"].as_i64().unwrap() > 3000, "{seen}");
    assert!(shot["non_white_share"].as_f64().unwrap() > 0.05, "{seen}");
    assert!(shot["colours"].as_i64().unwrap() > 50, "{seen}");
}
