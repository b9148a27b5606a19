//! The report's customer figures: retention, LTV by channel, churn by root cause and recovery.
//! Each is fixed SQL over one curated table (months bound as `$month`), the chart drawn from its
//! result, and a one-line reading; every number a figure shows or says is a value of its result.

use crate::error::Result;
use crate::report::chart::{self, Axes, HeatCell, Intervals, Series, Unit};
use crate::report::data::{Frame, ReportTables};
use crate::report::figure::{Figure, Params, distinct};

const RETENTION_SQL: &str = "
SELECT cohort_month, months_since_first,
       sum(cohort_size) AS cohort_size, sum(active_customers) AS active_customers,
       round(CAST(sum(active_customers) AS DOUBLE) / sum(cohort_size), 4) AS retention_rate
FROM cohort_retention
WHERE activity_month <= $month
GROUP BY cohort_month, months_since_first
ORDER BY cohort_month, months_since_first";

/// The cohort retention triangle: share of each cohort active N months after its first order.
pub async fn retention_heatmap(t: &ReportTables, p: &Params) -> Result<Figure> {
    let data = t.query(RETENTION_SQL, p).await?;
    let cohorts = distinct(&data, "cohort_month");
    let months = data
        .column("months_since_first")
        .iter()
        .filter_map(|c| c.number)
        .fold(0.0f64, f64::max) as usize;
    let columns: Vec<String> = (0..=months).map(|m| m.to_string()).collect();
    let cells: Vec<HeatCell> = (0..data.rows.len())
        .filter_map(|i| {
            let value = data.get(i, "retention_rate").number?;
            Some(HeatCell {
                row: cohorts
                    .iter()
                    .position(|c| c == data.get(i, "cohort_month").text())?,
                column: data.get(i, "months_since_first").number? as usize,
                value,
                label: format!("{:.0}", value * 100.0),
            })
        })
        .collect();
    let axes = Axes {
        caption: "Cohort retention: share of each cohort active N months after its first order (%)"
            .into(),
        x: "months since the first completed order".into(),
        y: "cohort (month of first order)".into(),
        unit: Unit::Percent,
    };
    let svg = chart::heatmap(&axes, &cohorts, &columns, &cells)?;
    Ok(Figure {
        id: "retention_heatmap",
        table: "cohort_retention",
        svg,
        reading: retention_reading(&data),
        data,
    })
}

fn retention_reading(data: &Frame) -> String {
    let month1: Vec<usize> = (0..data.rows.len())
        .filter(|&i| data.get(i, "months_since_first").number == Some(1.0))
        .collect();
    let rate = |i: usize| data.get(i, "retention_rate").number.unwrap_or(0.0);
    let (Some(&best), Some(&worst), Some(&newest)) = (
        month1.iter().max_by(|a, b| rate(**a).total_cmp(&rate(**b))),
        month1.iter().min_by(|a, b| rate(**a).total_cmp(&rate(**b))),
        month1.last(),
    ) else {
        return "No cohort has reached its first month yet.".into();
    };
    let cohort = |i: usize| data.get(i, "cohort_month").text().to_string();
    format!(
        "Month-1 retention ranges from {} (cohort {}) to {} (cohort {}); the newest cohort with a month 1, {}, kept {}.",
        Unit::Percent.format(rate(worst)),
        cohort(worst),
        Unit::Percent.format(rate(best)),
        cohort(best),
        cohort(newest),
        Unit::Percent.format(rate(newest)),
    )
}

const LTV_SQL: &str = "
SELECT acquisition_channel, months_since_first,
       sum(cohort_size) AS customers,
       sum(cumulative_net_revenue) AS cumulative_net_revenue,
       round(sum(cumulative_net_revenue) / sum(cohort_size), 2) AS net_revenue_per_customer
FROM cohort_retention
WHERE activity_month <= $month
GROUP BY acquisition_channel, months_since_first
ORDER BY acquisition_channel, months_since_first";

/// Realized LTV curves: cumulative net revenue per acquired customer by channel.
pub async fn ltv_by_channel(t: &ReportTables, p: &Params, currency: &str) -> Result<Figure> {
    let data = t.query(LTV_SQL, p).await?;
    let channels = distinct(&data, "acquisition_channel");
    let months = data
        .column("months_since_first")
        .iter()
        .filter_map(|c| c.number)
        .fold(0.0f64, f64::max) as usize;
    let series: Vec<Series> = channels
        .iter()
        .map(|ch| {
            let mut values = vec![None; months + 1];
            for i in 0..data.rows.len() {
                if data.get(i, "acquisition_channel").text() == ch {
                    let m = data.get(i, "months_since_first").number.unwrap_or(0.0) as usize;
                    values[m] = data.get(i, "net_revenue_per_customer").number;
                }
            }
            Series {
                name: ch.clone(),
                values,
            }
        })
        .collect();
    let axes = Axes {
        caption: "Realized LTV by acquisition channel: cumulative net revenue per customer".into(),
        x: "months since the first completed order".into(),
        y: format!("net revenue per customer ({currency})"),
        unit: Unit::Money,
    };
    let categories: Vec<String> = (0..=months).map(|m| m.to_string()).collect();
    let svg = chart::lines(&axes, &categories, &series)?;
    let reading = ltv_reading(&series, currency);
    Ok(Figure {
        id: "ltv_by_channel",
        table: "cohort_retention",
        svg,
        reading,
        data,
    })
}

fn ltv_reading(series: &[Series], currency: &str) -> String {
    // The longest horizon every channel has reached.
    let common = series
        .iter()
        .map(|s| s.values.iter().rposition(Option::is_some).unwrap_or(0))
        .min()
        .unwrap_or(0);
    let at = |s: &Series| s.values.get(common).copied().flatten().unwrap_or(0.0);
    let (Some(best), Some(worst)) = (
        series.iter().max_by(|a, b| at(a).total_cmp(&at(b))),
        series.iter().min_by(|a, b| at(a).total_cmp(&at(b))),
    ) else {
        return "No cohort has orders yet.".into();
    };
    format!(
        "{common} months after the first order, a customer acquired through {} has brought {} {currency} net, against {} {currency} through {}.",
        best.name,
        Unit::Money.format(at(best)),
        Unit::Money.format(at(worst)),
        worst.name
    )
}

const CHURN_SQL: &str = "
SELECT first_order_experience, customers, churned_customers,
       churn_rate, churn_rate_low, churn_rate_high, churn_days
FROM churn_root_cause
WHERE churn_rate IS NOT NULL
ORDER BY churn_rate DESC, first_order_experience";

/// Churn by the experience of the first order, with Wilson 95% intervals.
pub async fn churn_by_root_cause(t: &ReportTables) -> Result<Figure> {
    let data = t.query(CHURN_SQL, &Params::new()).await?;
    let causes = data.strings("first_order_experience");
    let number = |col: &str| -> Vec<f64> {
        data.column(col)
            .iter()
            .map(|c| c.number.unwrap_or(0.0))
            .collect()
    };
    let series = [Series {
        name: "churn rate, with its Wilson 95% interval".into(),
        values: data.numbers("churn_rate"),
    }];
    let intervals = Intervals {
        low: number("churn_rate_low"),
        high: number("churn_rate_high"),
    };
    let axes = Axes {
        caption: "Churn by the experience of the customer's first order".into(),
        x: "first order's experience (root cause)".into(),
        y: "customers churned (%)".into(),
        unit: Unit::Percent,
    };
    let svg = chart::bars(&axes, &causes, &series, Some(&intervals), true)?;
    Ok(Figure {
        id: "churn_by_root_cause",
        table: "churn_root_cause",
        svg,
        reading: churn_reading(&data),
        data,
    })
}

fn churn_reading(data: &Frame) -> String {
    let perfect =
        (0..data.rows.len()).find(|&i| data.get(i, "first_order_experience").text() == "perfect");
    let worst =
        (0..data.rows.len()).find(|&i| data.get(i, "first_order_experience").text() != "perfect");
    let pct = |i: usize, c: &str| Unit::Percent.format(data.get(i, c).number.unwrap_or(0.0));
    match (worst, perfect) {
        (Some(w), Some(p)) => format!(
            "After a {} first order, {} of customers churned (95% interval {} to {}), against {} after a perfect one.",
            data.get(w, "first_order_experience")
                .text()
                .replace('_', " "),
            pct(w, "churn_rate"),
            pct(w, "churn_rate_low"),
            pct(w, "churn_rate_high"),
            pct(p, "churn_rate"),
        ),
        _ => "Not enough first orders to compare root causes.".into(),
    }
}

const RECOVERY_SQL: &str = "
SELECT issue_type, compensated,
       sum(cases_observed_90d) AS cases_observed_90d, sum(repurchased_90d) AS repurchased_90d,
       round(CAST(sum(repurchased_90d) AS DOUBLE) / nullif(sum(cases_observed_90d), 0), 4)
         AS repurchase_rate_90d
FROM experience_recovery
WHERE issue_month <= $month
GROUP BY issue_type, compensated
ORDER BY issue_type, compensated";

/// Recovery: 90-day repurchase after a bad experience, compensated against not, by issue type.
pub async fn recovery_by_issue(t: &ReportTables, p: &Params) -> Result<Figure> {
    let data = t.query(RECOVERY_SQL, p).await?;
    let issues = distinct(&data, "issue_type");
    let rate = |issue: &str, compensated: &str| {
        (0..data.rows.len())
            .find(|&i| {
                data.get(i, "issue_type").text() == issue
                    && data.get(i, "compensated").text() == compensated
            })
            .and_then(|i| data.get(i, "repurchase_rate_90d").number)
    };
    let series: Vec<Series> = [
        ("true", "compensated (voucher)"),
        ("false", "not compensated"),
    ]
    .iter()
    .map(|(flag, name)| Series {
        name: name.to_string(),
        values: issues.iter().map(|i| rate(i, flag)).collect(),
    })
    .collect();
    let axes = Axes {
        caption: "Recovery after a bad experience: repurchase within 90 days".into(),
        x: "issue type".into(),
        y: "cases repurchased within 90 days (%)".into(),
        unit: Unit::Percent,
    };
    let svg = chart::bars(&axes, &issues, &series, None, true)?;
    let gaps: Vec<(String, f64, f64)> = issues
        .iter()
        .filter_map(|i| Some((i.clone(), rate(i, "true")?, rate(i, "false")?)))
        .collect();
    let reading = match gaps
        .iter()
        .max_by(|a, b| (a.1 - a.2).total_cmp(&(b.1 - b.2)))
    {
        Some((issue, yes, no)) => format!(
            "Compensated cases came back more often for {} of {} issue types; the widest gap is {}: {} against {} uncompensated.",
            gaps.iter().filter(|g| g.1 > g.2).count(),
            gaps.len(),
            issue.replace('_', " "),
            Unit::Percent.format(*yes),
            Unit::Percent.format(*no)
        ),
        None => "No issue type has both compensated and uncompensated cases yet.".into(),
    };
    Ok(Figure {
        id: "recovery_by_issue",
        table: "experience_recovery",
        svg,
        reading,
        data,
    })
}
