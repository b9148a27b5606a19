//! `retention demo`: generate data if the raw root is empty, run every job, and show what a
//! retention lead looks at first: the cohort retention triangle, churn by first-order root cause,
//! recovery of bad experiences, ROI per program, and for finance the last months of the budget
//! reconciliation with what can be closed.

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::cli::output::{OutputFormat, print_batches, print_summary};
use crate::error::Result;
use crate::execute::execute;
use crate::generate::{GenerateOptions, generate};
use crate::plan::workspace::Workspace;
use crate::values::Trigger;

pub const EXAMPLES: &str = "Examples:\n  retention demo";

/// Generate the default data set when the raw root is empty, run every job, print the
/// highlights and where the tables are.
pub async fn run(ws: Workspace) -> Result<()> {
    let ws = Arc::new(ws);
    let raw = &ws.engine.project.raw;
    let (store, path) = ws.engine.stores.store_for(raw)?;
    if store.list(Some(&path)).next().await.is_none() {
        println!("no raw data under {raw}: generating the default data set");
        generate(&ws.engine.stores, raw, &GenerateOptions::default(), None).await?;
    }
    let selected = ws.graph.job_names();
    let plan = ws.plan(&selected, Trigger::Demo)?;
    let report = execute(ws.clone(), &plan, ws.engine.project.jobs).await?;
    print_summary(&plan.run_id, &report.outcomes);
    let outcomes = report.into_result()?.outcomes;
    print_highlights(&ws.query_session().await?).await?;
    println!("\ncurated tables under {}:", ws.engine.project.curated);
    for (job, o) in plan.jobs.iter().zip(&outcomes) {
        println!(
            "  {:<24} {} (Delta version {})",
            job.table,
            job.url,
            o.output_version.unwrap_or_default()
        );
    }
    Ok(())
}

/// Retention by cohort month (rows) and months since the first order (columns).
const COHORT_TRIANGLE: &str = "
SELECT cohort_month,
       sum(CASE WHEN months_since_first = 0 THEN cohort_size END) AS customers,
       round(CAST(sum(CASE WHEN months_since_first = 1 THEN active_customers END) AS DOUBLE)
             / sum(CASE WHEN months_since_first = 1 THEN cohort_size END), 3) AS m1,
       round(CAST(sum(CASE WHEN months_since_first = 2 THEN active_customers END) AS DOUBLE)
             / sum(CASE WHEN months_since_first = 2 THEN cohort_size END), 3) AS m2,
       round(CAST(sum(CASE WHEN months_since_first = 3 THEN active_customers END) AS DOUBLE)
             / sum(CASE WHEN months_since_first = 3 THEN cohort_size END), 3) AS m3,
       round(CAST(sum(CASE WHEN months_since_first = 6 THEN active_customers END) AS DOUBLE)
             / sum(CASE WHEN months_since_first = 6 THEN cohort_size END), 3) AS m6,
       round(CAST(sum(CASE WHEN months_since_first = 12 THEN active_customers END) AS DOUBLE)
             / sum(CASE WHEN months_since_first = 12 THEN cohort_size END), 3) AS m12,
       CAST(sum(CASE WHEN months_since_first = 6 THEN cumulative_net_revenue END)
            / sum(CASE WHEN months_since_first = 6 THEN cohort_size END) AS DECIMAL(18,2)) AS ltv_6m
FROM cohort_retention
GROUP BY cohort_month
ORDER BY cohort_month";

const CHURN_BY_ROOT_CAUSE: &str = "
SELECT first_order_experience, customers_observed, repeat_rate_90d,
       lift_vs_perfect, lift_low, lift_high, churn_rate
FROM churn_root_cause
ORDER BY lift_vs_perfect";

const RECOVERY: &str = "
SELECT issue_type,
       sum(CASE WHEN compensated THEN cases_observed_90d ELSE 0 END) AS compensated_cases,
       round(CAST(sum(CASE WHEN compensated THEN repurchased_90d ELSE 0 END) AS DOUBLE)
             / sum(CASE WHEN compensated THEN cases_observed_90d ELSE 0 END), 3) AS compensated_recovery,
       round(CAST(sum(CASE WHEN NOT compensated THEN repurchased_90d ELSE 0 END) AS DOUBLE)
             / sum(CASE WHEN NOT compensated THEN cases_observed_90d ELSE 0 END), 3) AS uncompensated_recovery,
       sum(voucher_cost) AS voucher_cost,
       sum(redeemed_value) AS redeemed_value
FROM experience_recovery
GROUP BY issue_type
ORDER BY issue_type";

const PROGRAM_ROI: &str = "
SELECT program_id, program_name, program_kind,
       sum(spend) AS spend,
       sum(treated_customers) AS treated, sum(holdout_customers) AS holdout,
       sum(attributed_net_revenue) AS attributed_revenue,
       sum(incremental_revenue) AS incremental_revenue,
       round(CAST(sum(incremental_gross_margin) - sum(spend) AS DOUBLE) / CAST(sum(spend) AS DOUBLE), 3) AS roi
FROM program_roi
WHERE window_complete
GROUP BY program_id, program_name, program_kind
ORDER BY program_id";

/// Predicted value by RFM segment: who is alive and what they are worth in the next 12 months.
const CLV_BY_SEGMENT: &str = "
SELECT segment, count(*) AS customers,
       round(avg(p_alive), 3) AS p_alive,
       round(avg(expected_purchases_365d), 2) AS purchases_next_365d,
       CAST(avg(predicted_clv_12m) AS DECIMAL(18,2)) AS predicted_clv_12m,
       CAST(avg(historical_ltv) AS DECIMAL(18,2)) AS historical_ltv,
       sum(CASE WHEN value_tier = 'top' THEN 1 ELSE 0 END) AS top_tier
FROM customer_ltv
GROUP BY segment
ORDER BY predicted_clv_12m DESC";

/// Who to compensate: the recovery experiment per issue type and pre-issue value tier.
const RECOVERY_POLICY: &str = "
SELECT issue_type, value_tier, compensated_cases, uncompensated_cases,
       incremental_repurchase_rate AS lift, incremental_repurchase_rate_low AS lift_low,
       incremental_repurchase_rate_high AS lift_high, expected_incremental_clv,
       voucher_cost_per_case, net_value_per_case, recommendation
FROM recovery_policy
ORDER BY issue_type,
         CASE value_tier WHEN 'top' THEN 1 WHEN 'high' THEN 2 WHEN 'medium' THEN 3 ELSE 4 END";

/// The last six months: planned against actual, open items, and the next step to close.
const CLOSE_CANDIDATES: &str = "
SELECT month, status, planned, actual, variance, ledger_entries, open_items, next_step
FROM close_candidates
ORDER BY month DESC
LIMIT 6";

/// Print the seven views, each under a heading.
pub async fn print_highlights(ctx: &SessionContext) -> Result<()> {
    for (title, sql) in [
        (
            "Cohort retention (share of each cohort active N months after its first order)",
            COHORT_TRIANGLE,
        ),
        (
            "Churn by first-order root cause (90-day repeat rate, lift against perfect first orders)",
            CHURN_BY_ROOT_CAUSE,
        ),
        (
            "Recovery of bad experiences (repurchase within 90 days of the issue)",
            RECOVERY,
        ),
        (
            "Programs (months with a complete attribution window)",
            PROGRAM_ROI,
        ),
        (
            "Predicted lifetime value by segment (BG/NBD + Gamma-Gamma, margin 30%, next 12 months)",
            CLV_BY_SEGMENT,
        ),
        (
            "Who to compensate (recovery vouchers by issue and pre-issue value tier, 95% intervals)",
            RECOVERY_POLICY,
        ),
        (
            "Finance: budget against actual and the close candidates (close with `retention close-month YYYY-MM`)",
            CLOSE_CANDIDATES,
        ),
    ] {
        println!("\n{title}");
        let batches = ctx.sql(sql).await?.collect().await?;
        print_batches(&batches, OutputFormat::Table)?;
    }
    Ok(())
}
