//! The report's money figures: ROI and ROAS per retention program with the holdout lift, the
//! budget against actual by month with its variance, and the open close items. Sums of money stay
//! exact decimals in the rows; ratios are computed as the program_roi job computes them.

use crate::error::Result;
use crate::report::chart::{self, Axes, Unit};
use crate::report::data::{Frame, ReportTables};
use crate::report::figure::{Figure, Listing, Params, series};

const PROGRAMS_SQL: &str = "
SELECT program_id, program_name,
       sum(spend) AS spend,
       sum(attributed_net_revenue) AS attributed_net_revenue,
       sum(incremental_revenue) AS incremental_revenue,
       sum(incremental_gross_margin) AS incremental_gross_margin,
       round(CAST(sum(attributed_net_revenue) AS DOUBLE) / NULLIF(CAST(sum(spend) AS DOUBLE), 0), 4) AS roas,
       round(CAST(sum(incremental_revenue) AS DOUBLE) / NULLIF(CAST(sum(spend) AS DOUBLE), 0), 4) AS incremental_roas,
       round(CAST(sum(incremental_gross_margin) - sum(spend) AS DOUBLE)
             / NULLIF(CAST(sum(spend) AS DOUBLE), 0), 4) AS roi,
       sum(treated_customers) AS treated_customers,
       sum(treated_repurchased) AS treated_repurchased,
       sum(holdout_customers) AS holdout_customers,
       sum(holdout_repurchased) AS holdout_repurchased,
       round(CAST(sum(treated_repurchased) AS DOUBLE) / NULLIF(sum(treated_customers), 0), 4) AS treated_repurchase_rate,
       round(CAST(sum(holdout_repurchased) AS DOUBLE) / NULLIF(sum(holdout_customers), 0), 4) AS holdout_repurchase_rate
FROM program_roi
WHERE window_complete AND month <= $month
GROUP BY program_id, program_name
ORDER BY program_id";

/// ROI, ROAS and incremental ROAS per program, over the months whose attribution window is
/// complete.
pub async fn program_returns(t: &ReportTables, p: &Params) -> Result<Vec<Figure>> {
    let data = t.query(PROGRAMS_SQL, p).await?;
    let programs = data.strings("program_name");
    let returns = chart::bars(
        &Axes {
            caption: "Return per retention program (months with a complete attribution window)"
                .into(),
            x: "program".into(),
            y: "return per unit of spend (×)".into(),
            unit: Unit::Number(2),
        },
        &programs,
        &[
            series(&data, "roas", "ROAS (attributed revenue ÷ spend)"),
            series(
                &data,
                "incremental_roas",
                "incremental ROAS (over the holdout)",
            ),
            series(&data, "roi", "ROI ((incremental margin − spend) ÷ spend)"),
        ],
        None,
        true,
    )?;
    let lift = chart::bars(
        &Axes {
            caption: "Holdout lift: repurchase rate of treated customers against the holdout"
                .into(),
            x: "program".into(),
            y: "customers who repurchased (%)".into(),
            unit: Unit::Percent,
        },
        &programs,
        &[
            series(&data, "treated_repurchase_rate", "treated"),
            series(&data, "holdout_repurchase_rate", "holdout (not treated)"),
        ],
        None,
        true,
    )?;
    let (returns_reading, lift_reading) = program_readings(&data);
    Ok(vec![
        Figure {
            id: "program_returns",
            table: "program_roi",
            svg: returns,
            reading: returns_reading,
            data: data.clone(),
        },
        Figure {
            id: "program_lift",
            table: "program_roi",
            svg: lift,
            reading: lift_reading,
            data,
        },
    ])
}

fn program_readings(data: &Frame) -> (String, String) {
    let n = |i: usize, c: &str| data.get(i, c).number;
    let name = |i: usize| data.get(i, "program_name").text().to_string();
    let rows = 0..data.rows.len();
    let best = rows
        .clone()
        .filter(|&i| n(i, "roi").is_some())
        .max_by(|&a, &b| {
            n(a, "roi")
                .unwrap_or(0.0)
                .total_cmp(&n(b, "roi").unwrap_or(0.0))
        });
    let returns = match best {
        Some(i) => format!(
            "{} returns the most: ROI {} and incremental ROAS {} on {} of spend; {} of {} programs earn back more margin than they cost.",
            name(i),
            Unit::Number(2).format(n(i, "roi").unwrap_or(0.0)),
            Unit::Number(2).format(n(i, "incremental_roas").unwrap_or(0.0)),
            data.get(i, "spend").text(),
            rows.clone()
                .filter(|&i| n(i, "roi").is_some_and(|r| r > 0.0))
                .count(),
            data.rows.len()
        ),
        None => "No program has a month with a complete attribution window yet.".into(),
    };
    let lifts: Vec<(usize, f64)> = rows
        .filter_map(|i| {
            Some((
                i,
                n(i, "treated_repurchase_rate")? - n(i, "holdout_repurchase_rate")?,
            ))
        })
        .collect();
    let lift = match lifts.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        Some(&(i, _)) => format!(
            "The largest lift is {}: {} of treated customers repurchased against {} of its holdout; {} of {} programs beat their holdout.",
            name(i),
            Unit::Percent.format(n(i, "treated_repurchase_rate").unwrap_or(0.0)),
            Unit::Percent.format(n(i, "holdout_repurchase_rate").unwrap_or(0.0)),
            lifts.iter().filter(|l| l.1 > 0.0).count(),
            lifts.len()
        ),
        None => "No program has a holdout yet.".into(),
    };
    (returns, lift)
}

const BUDGET_SQL: &str = "
SELECT month, min(reporting_currency) AS currency,
       sum(planned) AS planned, sum(actual) AS actual, sum(variance) AS variance,
       round(CAST(sum(variance) AS DOUBLE) / NULLIF(CAST(sum(planned) AS DOUBLE), 0), 4) AS variance_share
FROM budget_reconciliation
WHERE month <= $month
GROUP BY month
ORDER BY month";

/// Budget against actual per month (every program and cost center), and the variance.
pub async fn budget(t: &ReportTables, p: &Params) -> Result<(Vec<Figure>, String)> {
    let data = t.query(BUDGET_SQL, p).await?;
    let currency = data
        .column("currency")
        .first()
        .map_or("", |c| c.text())
        .to_string();
    let months = data.strings("month");
    let against = chart::bars(
        &Axes {
            caption: "Budget against actual, every program and cost center".into(),
            x: "month".into(),
            y: format!("amount ({currency})"),
            unit: Unit::Money,
        },
        &months,
        &[
            series(&data, "planned", "planned"),
            series(&data, "actual", "actual"),
        ],
        None,
        false,
    )?;
    let variance = chart::bars(
        &Axes {
            caption: "Variance: actual minus planned".into(),
            x: "month".into(),
            y: format!("variance ({currency}; above zero is overspend)"),
            unit: Unit::Money,
        },
        &months,
        &[series(&data, "variance", "variance")],
        None,
        true,
    )?;
    let reading = budget_reading(&data, &currency);
    let figures = vec![
        Figure {
            id: "budget_against_actual",
            table: "budget_reconciliation",
            svg: against,
            reading: reading.clone(),
            data: data.clone(),
        },
        Figure {
            id: "budget_variance",
            table: "budget_reconciliation",
            svg: variance,
            reading: variance_reading(&data, &currency),
            data,
        },
    ];
    Ok((figures, currency))
}

fn budget_reading(data: &Frame, currency: &str) -> String {
    let Some(last) = data.rows.len().checked_sub(1) else {
        return "No month has a budget yet.".into();
    };
    format!(
        "In {}, {} {currency} was spent against {} {currency} planned: a variance of {} {currency} ({}).",
        data.get(last, "month").text(),
        data.get(last, "actual").text(),
        data.get(last, "planned").text(),
        data.get(last, "variance").text(),
        Unit::Percent.format(data.get(last, "variance_share").number.unwrap_or(0.0)),
    )
}

fn variance_reading(data: &Frame, currency: &str) -> String {
    let v = |i: usize| data.get(i, "variance").number.unwrap_or(0.0);
    let Some(worst) = (0..data.rows.len()).max_by(|&a, &b| v(a).abs().total_cmp(&v(b).abs()))
    else {
        return "No month has a budget yet.".into();
    };
    format!(
        "{} of {} months overspent; the largest variance is {} {currency} in {}.",
        (0..data.rows.len()).filter(|&i| v(i) > 0.0).count(),
        data.rows.len(),
        data.get(worst, "variance").text(),
        data.get(worst, "month").text(),
    )
}

const OPEN_MONTHS_SQL: &str = "
SELECT month, status, open_items, late_entries, ready_to_close, next_step
FROM close_candidates
WHERE month <= $month AND status <> 'closed'
ORDER BY month";

const OPEN_ITEMS_SQL: &str = "
SELECT e.month, e.source, e.entry_id, e.program_id, e.cost_center, e.entry_type,
       e.currency, e.amount, e.reason
FROM reconciliation_exceptions e
JOIN close_candidates c ON c.month = e.month
WHERE e.month <= $month AND c.status <> 'closed'
ORDER BY e.month, e.source, e.entry_id, e.program_id";

/// The months not yet closed with what stands in their way, and the open items themselves.
pub async fn open_close_items(t: &ReportTables, p: &Params) -> Result<Vec<Listing>> {
    let months = t.query(OPEN_MONTHS_SQL, p).await?;
    let items = t.query(OPEN_ITEMS_SQL, p).await?;
    Ok(vec![
        Listing {
            id: "open_months",
            table: "close_candidates",
            caption: format!(
                "{} months are not closed; {} of them are ready to close.",
                months.rows.len(),
                months
                    .column("ready_to_close")
                    .iter()
                    .filter(|c| c.text() == "true")
                    .count()
            ),
            data: months,
        },
        Listing {
            id: "open_items",
            table: "reconciliation_exceptions",
            caption: format!(
                "{} ledger entries and plan lines of open months could not be reconciled.",
                items.rows.len()
            ),
            data: items,
        },
    ])
}
