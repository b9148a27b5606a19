//! The customer-base models on real data: BG/NBD and Gamma-Gamma fitted on the CDNOW sample
//! reproduce Fader, Hardie & Lee (2005). The sample ships inside the `lifetimes` wheel on PyPI;
//! the test fetches it once (`pip download`) into `$HOME/.cache/retention-data`, never into the
//! repository, and skips with a reason when it cannot.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::NaiveDate;
use retention::engine::clv::bgnbd::History;
use retention::engine::clv::fit::{fit_bgnbd, fit_gamma_gamma};

use super::skip;

/// `CDNOW_sample.txt`: customer id, sample id, date (YYYYMMDD), CDs, dollar value. Fetched once
/// per process (two tests read it at once) and written under a temporary name, then renamed, so
/// no reader ever sees a half-written file.
fn cdnow_sample() -> Option<String> {
    static SAMPLE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(fetch_cdnow_sample).clone()
}

fn fetch_cdnow_sample() -> Option<String> {
    let cache = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/retention-data/lifetimes-0.11.3");
    let file = cache.join("CDNOW_sample.txt");
    if !file.exists() {
        std::fs::create_dir_all(&cache).ok()?;
        let fetched = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
            ])
            .args(["lifetimes==0.11.3", "-d"])
            .arg(&cache)
            .status()
            .ok()?
            .success();
        let unzipped = fetched
            && std::process::Command::new("python3")
                .arg("-c")
                .arg("import glob, sys, zipfile; d = sys.argv[1]; z = zipfile.ZipFile(glob.glob(d + '/*.whl')[0]); import os; open(d + '/CDNOW_sample.tmp', 'wb').write(z.read('lifetimes/datasets/CDNOW_sample.txt')); os.replace(d + '/CDNOW_sample.tmp', d + '/CDNOW_sample.txt')")
                .arg(&cache)
                .status()
                .ok()?
                .success();
        if !unzipped {
            return None;
        }
    }
    std::fs::read_to_string(file).ok()
}

#[test]
fn cdnow_reproduces_fader_hardie_lee() {
    let Some(text) = cdnow_sample() else {
        skip("needs the CDNOW sample from PyPI (pip download lifetimes==0.11.3)");
        return;
    };
    // Purchase days per customer (same-day purchases merged), with their value.
    let mut days: BTreeMap<u32, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    let fields: Vec<&str> = text.split_whitespace().collect();
    for row in fields.chunks(5) {
        let customer: u32 = row[1].parse().unwrap();
        let day = NaiveDate::parse_from_str(row[2], "%Y%m%d").unwrap();
        let value: f64 = row[4].parse().unwrap();
        *days.entry(customer).or_default().entry(day).or_default() += value;
    }
    assert_eq!(days.len(), 2357);
    // Calibration to 1997-09-30, in weeks.
    let end = NaiveDate::from_ymd_opt(1997, 9, 30).unwrap();
    let weeks = |a: NaiveDate, b: NaiveDate| (b - a).num_days() as f64 / 7.0;
    let mut histories = Vec::new();
    let mut spend = Vec::new();
    for d in days.values() {
        let cal: Vec<(&NaiveDate, &f64)> = d.iter().filter(|(day, _)| **day <= end).collect();
        let first = *cal[0].0;
        let x = (cal.len() - 1) as f64;
        let t_x = weeks(first, *cal.last().unwrap().0);
        histories.push((
            History {
                x,
                t_x,
                t: weeks(first, end),
            },
            1.0,
        ));
        if x > 0.0 {
            let mean = cal[1..].iter().map(|(_, v)| **v).sum::<f64>() / x;
            spend.push((x, mean, 1.0));
        }
    }
    let bg = fit_bgnbd(&histories).unwrap();
    // Calibration against the 39-week holdout to 1998-06-30 (as `clv_calibration` computes it):
    // 1,882 actual repeat purchase days against 1,653.4 predicted (scipy and mpmath on the same
    // rows with the same fit).
    let holdout_end = NaiveDate::from_ymd_opt(1998, 6, 30).unwrap();
    let actual: usize = days
        .values()
        .map(|d| {
            d.keys()
                .filter(|day| **day > end && **day <= holdout_end)
                .count()
        })
        .sum();
    let predicted: f64 = histories
        .iter()
        .map(|(h, _)| bg.params.expected_purchases(h, 39.0).unwrap())
        .sum();
    assert_eq!(actual, 1882);
    assert!((predicted - 1653.4).abs() / 1653.4 < 0.005, "{predicted}");
    assert!(bg.converged, "{bg:?}");
    let p = bg.params;
    for (name, got, paper) in [
        ("r", p.r, 0.243),
        ("alpha", p.alpha, 4.414),
        ("a", p.a, 0.793),
        ("b", p.b, 2.426),
        ("log-likelihood", bg.log_likelihood, -9582.4),
    ] {
        assert!(
            (got - paper).abs() / paper.abs() < 0.005,
            "{name}: fitted {got}, paper {paper}"
        );
    }
    assert_eq!(spend.len(), 946);
    let gg = fit_gamma_gamma(&spend).unwrap();
    assert!(gg.converged, "{gg:?}");
    for (name, got, paper) in [
        ("p", gg.params.p, 6.25),
        ("q", gg.params.q, 3.74),
        ("gamma", gg.params.gamma, 15.44),
    ] {
        assert!(
            (got - paper).abs() / paper < 0.005,
            "{name}: fitted {got}, paper {paper}"
        );
    }
}

/// The same figures through the SQL jobs of `examples/cdnow`: its adapters map the sample onto
/// orders, and `customer_summary`, `clv_model` and `clv_calibration` run as in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdnow_example_reproduces_the_paper_through_the_sql_jobs() {
    use super::{Overrides, Project, Stores, TempDir, Url, rows_of, run_jobs};
    let Some(text) = cdnow_sample() else {
        skip("needs the CDNOW sample from PyPI (pip download lifetimes==0.11.3)");
        return;
    };
    // Land the sample as examples/cdnow/fetch.sh does: commas and a header.
    let lake = TempDir::new().unwrap();
    let landing = lake.path().join("raw/cdnow");
    std::fs::create_dir_all(&landing).unwrap();
    let mut csv = String::from("full_id,customer_id,purchase_date,cds,dollar_value\n");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        csv.push_str(&line.split_whitespace().collect::<Vec<_>>().join(","));
        csv.push('\n');
    }
    std::fs::write(landing.join("cdnow_sample.csv"), csv).unwrap();
    let raw = Url::from_directory_path(lake.path().join("raw")).unwrap();
    let curated = Url::from_directory_path(lake.path().join("curated")).unwrap();
    let over = Overrides::with_storage(Some(raw.to_string()), Some(curated.to_string()));
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cdnow");
    let project = Project::load(&example, &over).unwrap();
    let ws = std::sync::Arc::new(retention::app::workspace(project, Stores::default()).unwrap());
    run_jobs(&ws, &[]).await;
    let ctx = ws.query_session().await.unwrap();

    let fit = rows_of(
        &ctx,
        "SELECT round(r, 3), round(alpha, 3), round(a, 3), round(b, 3), round(log_likelihood, 1),
                customers, converged, CAST(as_of AS VARCHAR)
         FROM clv_model WHERE model = 'bgnbd'",
    )
    .await;
    assert_eq!(
        fit[0],
        [
            "0.243",
            "4.414",
            "0.793",
            "2.426",
            "-9582.4",
            "2357",
            "true",
            "1997-09-30"
        ]
    );
    // Standard errors from the observed information, as scipy's finite-difference Hessian of
    // the same likelihood gives them (natural parameters): r 0.01256, alpha 0.3782, a 0.1857,
    // b 0.7054; p 1.1900, q 0.2901, gamma 4.159 (within 1%).
    let se = rows_of(
        &ctx,
        "SELECT max(r_se), max(alpha_se), max(a_se), max(b_se), max(p_se), max(q_se), max(gamma_se)
         FROM clv_model",
    )
    .await;
    let reference = [0.01256, 0.3782, 0.1857, 0.7054, 1.1900, 0.2901, 4.159];
    for (got, want) in se[0].iter().zip(reference) {
        let got: f64 = got.parse().unwrap();
        assert!(
            (got - want).abs() / want < 0.01,
            "standard error {got}, scipy {want}"
        );
    }
    let spend = rows_of(
        &ctx,
        "SELECT round(p, 2), round(q, 2), round(gamma, 2), customers, converged
         FROM clv_model WHERE model = 'gamma_gamma'",
    )
    .await;
    // The paper's p 6.25, q 3.74, gamma 15.44 (each within 0.5%).
    assert_eq!(spend[0], ["6.25", "3.74", "15.45", "946", "true"]);
    let calibration = rows_of(
        &ctx,
        "SELECT calibration_frequency, customers, CAST(actual_purchases AS BIGINT), round(predicted_purchases, 1)
         FROM clv_calibration WHERE calibration_frequency IN ('0', '7+', 'all')
         ORDER BY calibration_frequency",
    )
    .await;
    assert_eq!(
        calibration,
        [
            ["0", "1411", "334", "317.6"],
            ["7+", "64", "407", "394.1"],
            ["all", "2357", "1882", "1653.4"],
        ]
    );
}

/// Fit recovery: customers the generator draws from BG/NBD itself (r 0.5, alpha 150 days, a 0.8,
/// b 2.4, over 24 months) go through order_experience and customer_summary, and clv_model
/// recovers every parameter within 3 of its standard errors. The rates are low enough (1.2
/// purchases a year on average) that merging same-day purchases into purchase days biases
/// nothing measurable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_bgnbd_customers_are_recovered_within_their_standard_errors() {
    let planted = retention::generate::PlantedBgNbd {
        r: 0.5,
        alpha_days: 150.0,
        a: 0.8,
        b: 2.4,
    };
    let opts = retention::generate::GenerateOptions {
        seed: 5,
        customers: 30_000,
        bgnbd: Some(planted),
        ..Default::default()
    };
    let (_lake, ws, generated) = super::generated_lake(opts, &["+clv_model"]).await;
    assert_eq!(generated.truth.planted_bgnbd, Some(planted));
    let ctx = ws.query_session().await.unwrap();
    let fit = super::rows_of(
        &ctx,
        "SELECT r, r_se, alpha * 7, alpha_se * 7, a, a_se, b, b_se, customers, converged, time_unit
         FROM clv_model WHERE model = 'bgnbd'",
    )
    .await;
    let v: Vec<f64> = fit[0][..8].iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(fit[0][9..], ["true", "week"]);
    let customers: u64 = fit[0][8].parse().unwrap();
    assert!(customers > 25_000, "{customers} customers with a purchase");
    let truth = [planted.r, planted.alpha_days, planted.a, planted.b];
    for (i, name) in ["r", "alpha (days)", "a", "b"].iter().enumerate() {
        let (estimate, se) = (v[2 * i], v[2 * i + 1]);
        let z = (estimate - truth[i]) / se;
        println!(
            "{name}: fitted {estimate:.4} ± {se:.4}, planted {}, z {z:.2}",
            truth[i]
        );
        assert!(
            se > 0.0 && z.abs() <= 3.0,
            "{name}: {estimate} ± {se}, planted {}",
            truth[i]
        );
    }
}
