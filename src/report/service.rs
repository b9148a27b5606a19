//! The report's service-level figures from fulfillment_sla, by order month: on-time and lost
//! deliveries (exact shares of shipped orders), and the refund and support medians (the regions'
//! and carriers' medians weighted by their refunds and tickets, as the table keeps no raw times).

use crate::error::Result;
use crate::report::chart::{self, Axes, Unit};
use crate::report::data::{Frame, ReportTables};
use crate::report::figure::{Figure, Params, series};

const SLA_SQL: &str = "
SELECT order_month,
       sum(shipped_orders) AS shipped_orders,
       sum(on_time_orders) AS on_time_orders,
       sum(lost_orders) AS lost_orders,
       round(CAST(sum(on_time_orders) AS DOUBLE) / NULLIF(sum(shipped_orders), 0), 4) AS on_time_rate,
       round(CAST(sum(lost_orders) AS DOUBLE) / NULLIF(sum(shipped_orders), 0), 4) AS lost_rate,
       sum(refunds) AS refunds,
       round(sum(refund_processing_days_p50 * refunds) / NULLIF(sum(refunds), 0), 2)
         AS refund_processing_days_p50,
       sum(tickets) AS tickets,
       round(sum(resolution_hours_p50 * tickets) / NULLIF(sum(tickets), 0), 2)
         AS resolution_hours_p50,
       round(sum(mean_csat * csat_responses) / NULLIF(sum(csat_responses), 0), 2) AS mean_csat
FROM fulfillment_sla
WHERE order_month <= $month
GROUP BY order_month
ORDER BY order_month";

/// Delivery, refund and support service levels by month.
pub async fn sla_trends(t: &ReportTables, p: &Params) -> Result<Vec<Figure>> {
    let data = t.query(SLA_SQL, p).await?;
    let months = data.strings("order_month");
    let delivery = chart::lines(
        &Axes {
            caption: "Fulfillment: deliveries on time and lost, by order month".into(),
            x: "order month".into(),
            y: "shipped orders (%)".into(),
            unit: Unit::Percent,
        },
        &months,
        &[
            series(&data, "on_time_rate", "on time"),
            series(&data, "lost_rate", "lost"),
        ],
    )?;
    let refunds = chart::lines(
        &Axes {
            caption: "Refunds: median processing time, by order month".into(),
            x: "order month".into(),
            y: "days from request to refund (median)".into(),
            unit: Unit::Number(1),
        },
        &months,
        &[series(
            &data,
            "refund_processing_days_p50",
            "refund processing, median days",
        )],
    )?;
    let support = chart::lines(
        &Axes {
            caption: "Support: median resolution time, by order month".into(),
            x: "order month".into(),
            y: "hours to resolve a ticket (median)".into(),
            unit: Unit::Number(1),
        },
        &months,
        &[series(
            &data,
            "resolution_hours_p50",
            "ticket resolution, median hours",
        )],
    )?;
    let [d, r, s] = sla_readings(&data);
    let figure = |id, svg, reading| Figure {
        id,
        table: "fulfillment_sla",
        svg,
        reading,
        data: data.clone(),
    };
    Ok(vec![
        figure("sla_delivery", delivery, d),
        figure("sla_refunds", refunds, r),
        figure("sla_support", support, s),
    ])
}

/// First against last month of each trend.
fn sla_readings(data: &Frame) -> [String; 3] {
    let Some(last) = data.rows.len().checked_sub(1) else {
        return std::array::from_fn(|_| "No shipped orders yet.".to_string());
    };
    let month = |i: usize| data.get(i, "order_month").text().to_string();
    let pct = |i: usize, c: &str| Unit::Percent.format(data.get(i, c).number.unwrap_or(0.0));
    let text = |i: usize, c: &str| data.get(i, c).text().to_string();
    [
        format!(
            "{} of shipped orders arrived on time in {} against {} in {}; {} were lost in {}.",
            pct(last, "on_time_rate"),
            month(last),
            pct(0, "on_time_rate"),
            month(0),
            pct(last, "lost_rate"),
            month(last)
        ),
        format!(
            "Refunds took a median {} days in {} against {} days in {}.",
            text(last, "refund_processing_days_p50"),
            month(last),
            text(0, "refund_processing_days_p50"),
            month(0)
        ),
        format!(
            "Support tickets took a median {} hours to resolve in {} against {} hours in {}; mean CSAT {}.",
            text(last, "resolution_hours_p50"),
            month(last),
            text(0, "resolution_hours_p50"),
            month(0),
            text(last, "mean_csat")
        ),
    ]
}
