//! End to end on a generated lake: the marts and the finance reconciliation recover what the generator planted.

use super::*;

/// Tolerance for a ratio of two binomial rates estimated from (x1 of n1) and (x0 of n0): four
/// standard errors of the log ratio (delta method), plus `bias` for known model effects.
fn log_ratio_tolerance(x1: f64, n1: f64, x0: f64, n0: f64, bias: f64) -> f64 {
    let (r1, r0) = (x1 / n1, x0 / n0);
    4.0 * ((1.0 - r1) / (n1 * r1) + (1.0 - r0) / (n0 * r0)).sqrt() + bias
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_marketplace_marts_recover_planted_truth() {
    let opts = retention::generate::GenerateOptions {
        seed: 7,
        customers: 40_000,
        ..Default::default()
    };
    let (_lake, ws, generated) = generated_lake(opts, &[]).await;
    let truth = &generated.truth;
    let ctx = ws.query_session().await.unwrap();

    // 1. Exact: the retention curve per channel (active and eligible customers, months 0-12).
    for (channel, active) in &truth.retention_active {
        let eligible = &truth.retention_eligible[channel];
        let rows = rows_of(
            &ctx,
            &format!(
                "SELECT months_since_first, sum(active_customers), sum(cohort_size) FROM cohort_retention
                 WHERE acquisition_channel = '{channel}' AND months_since_first <= 12
                 GROUP BY months_since_first ORDER BY months_since_first"
            ),
        )
        .await;
        for (k, row) in rows.iter().enumerate() {
            assert_eq!(
                (
                    row[1].parse::<u64>().unwrap(),
                    row[2].parse::<u64>().unwrap()
                ),
                (active[k], eligible[k]),
                "{channel} month {k}"
            );
        }
        assert_eq!(rows.len(), 13, "{channel}");
    }

    // 2. Exact: settled completed orders by primary issue.
    let settled_before = chrono::NaiveDate::parse_from_str(&truth.end, "%Y-%m-%d").unwrap()
        + chrono::Duration::days(1)
        - chrono::Duration::days(retention::generate::SETTLED_DAYS);
    let rows = rows_of(
        &ctx,
        &format!(
            "SELECT primary_issue, count(*) FROM order_experience
             WHERE NOT is_cancelled AND order_ts < TIMESTAMP '{settled_before}T00:00:00Z' GROUP BY primary_issue"
        ),
    )
    .await;
    let by_issue: std::collections::BTreeMap<String, u64> = rows
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(by_issue, truth.orders_by_issue);

    // 3. Exact money control totals.
    let totals = rows_of(
        &ctx,
        "SELECT (SELECT sum(gmv) FROM orders), (SELECT sum(amount) FROM refunds)",
    )
    .await;
    assert_eq!(
        (totals[0][0].as_str(), totals[0][1].as_str()),
        (truth.gmv_total.as_str(), truth.refund_total.as_str())
    );
    for p in &truth.programs {
        let spend = rows_of(
            &ctx,
            &format!(
                "SELECT sum(marketing_spend), sum(redeemed_voucher_value) FROM program_roi WHERE program_id = {}",
                p.program_id
            ),
        )
        .await;
        assert_eq!(
            spend[0][0], p.marketing_spend,
            "program {} marketing spend",
            p.program_id
        );
        assert_eq!(
            spend[0][1], p.voucher_value_redeemed,
            "program {} redeemed vouchers",
            p.program_id
        );
    }

    // 4. Bad-experience effects: lift of each first-order issue against perfect first orders.
    //    Expected: the ratio of the planted mean return probabilities. The 90-day window starts at
    //    the first order while the next order follows the felt outcome, which comes up to about
    //    ten days later for returns than for perfect orders: at most a 4% lower lift (log 0.05).
    let rows = rows_of(&ctx, "SELECT first_order_experience, customers_observed, repeat_customers_90d FROM churn_root_cause").await;
    let groups: std::collections::BTreeMap<String, (f64, f64)> = rows
        .into_iter()
        .map(|r| (r[0].clone(), (r[2].parse().unwrap(), r[1].parse().unwrap())))
        .collect();
    let (x0, n0) = groups["perfect"];
    let p0 = truth.first_order_groups["none"].mean_return_probability;
    let mut report_lines = Vec::new();
    for issue in [
        "lost_parcel",
        "returned",
        "refunded",
        "late_delivery",
        "support_contact",
        "low_rating",
    ] {
        let (x1, n1) = groups[issue];
        let measured = (x1 / n1) / (x0 / n0);
        let planted = truth.first_order_groups[issue].mean_return_probability / p0;
        let tol = log_ratio_tolerance(x1, n1, x0, n0, 0.05);
        report_lines.push(format!(
            "{issue}: lift {measured:.3}, planted {planted:.3}, tolerance ±{tol:.3} (log)"
        ));
        assert!(
            (measured.ln() - planted.ln()).abs() <= tol,
            "{issue}: measured lift {measured:.4}, planted {planted:.4}, log tolerance {tol:.4}"
        );
    }

    // 5. Recovery: compensated against uncompensated recovery, per issue type. Both arms share
    //    the timing, so no bias allowance.
    let rows = rows_of(
        &ctx,
        "SELECT issue_type, compensated, sum(repurchased_90d), sum(cases_observed_90d) FROM experience_recovery GROUP BY issue_type, compensated",
    )
    .await;
    let cell = |issue: &str, comp: &str| {
        let r = rows.iter().find(|r| r[0] == issue && r[1] == comp).unwrap();
        (r[2].parse::<f64>().unwrap(), r[3].parse::<f64>().unwrap())
    };
    for issue in [
        "lost_parcel",
        "returned",
        "refunded",
        "late_delivery",
        "support_contact",
        "low_rating",
    ] {
        let (x1, n1) = cell(issue, "true");
        let (x0, n0) = cell(issue, "false");
        let measured = (x1 / n1) / (x0 / n0);
        let planted = truth.recovery_groups[&format!("{issue}/compensated")]
            .mean_return_probability
            / truth.recovery_groups[&format!("{issue}/uncompensated")].mean_return_probability;
        let tol = log_ratio_tolerance(x1, n1, x0, n0, 0.0);
        report_lines.push(format!(
            "recovery {issue}: {measured:.3}, planted {planted:.3}, tolerance ±{tol:.3}"
        ));
        assert!(
            (measured.ln() - planted.ln()).abs() <= tol,
            "recovery {issue}: measured {measured:.4}, planted {planted:.4}, log tolerance {tol:.4}"
        );
    }

    assert_recovery_policy_is_randomised(&ctx, truth, &mut report_lines).await;

    // 6. Programs: treated against holdout repurchase, months with a complete window.
    for p in truth.programs.iter().filter(|p| p.holdout_share > 0.0) {
        let r = rows_of(
            &ctx,
            &format!(
                "SELECT sum(treated_repurchased), sum(treated_customers), sum(holdout_repurchased), sum(holdout_customers)
                 FROM program_roi WHERE program_id = {} AND window_complete",
                p.program_id
            ),
        )
        .await;
        let v: Vec<f64> = r[0].iter().map(|s| s.parse().unwrap()).collect();
        let measured = (v[0] / v[1]) / (v[2] / v[3]);
        let planted = truth.program_groups[&format!("{}/treated", p.program_id)]
            .mean_return_probability
            / truth.program_groups[&format!("{}/holdout", p.program_id)].mean_return_probability;
        let tol = log_ratio_tolerance(v[0], v[1], v[2], v[3], 0.0);
        report_lines.push(format!(
            "program {}: {measured:.3}, planted {planted:.3}, tolerance ±{tol:.3}",
            p.program_id
        ));
        assert!(
            (measured.ln() - planted.ln()).abs() <= tol,
            "program {}: measured {measured:.4}, planted {planted:.4}, log tolerance {tol:.4}",
            p.program_id
        );
    }
    println!("{}", report_lines.join("\n"));
    assert_finance_matches_truth(&ctx, &truth.finance).await;
}

/// recovery_policy: the value tier is taken before the issue, so the random assignment of
/// recovery vouchers holds within every tier (the compensated share of the cases is the planted
/// voucher rate), and each cell's lift is the planted lift of its issue type (the voucher restores
/// a fixed share of the lost chance, whatever the customer's value).
async fn assert_recovery_policy_is_randomised(
    ctx: &datafusion::prelude::SessionContext,
    truth: &retention::generate::Truth,
    report_lines: &mut Vec<String>,
) {
    let rows = rows_of(
        ctx,
        "SELECT value_tier, sum(compensated_cases), sum(compensated_cases + uncompensated_cases)
         FROM recovery_policy GROUP BY value_tier ORDER BY value_tier",
    )
    .await;
    assert_eq!(rows.len(), 4, "four tiers: {rows:?}");
    for r in &rows {
        let (k, n) = (r[1].parse::<f64>().unwrap(), r[2].parse::<f64>().unwrap());
        let rate = truth.voucher_rate;
        let tol = 4.0 * (rate * (1.0 - rate) / n).sqrt();
        report_lines.push(format!(
            "policy tier {}: compensated share {:.3} of {n} cases, planted {rate}",
            r[0],
            k / n
        ));
        assert!((k / n - rate).abs() <= tol, "tier {}: {k} of {n}", r[0]);
    }
    let cells = rows_of(
        ctx,
        "SELECT issue_type, value_tier, compensated_repurchased, compensated_cases,
                uncompensated_repurchased, uncompensated_cases, recommendation
         FROM recovery_policy",
    )
    .await;
    let mut checked = 0;
    for r in &cells {
        let v: Vec<f64> = r[2..6].iter().map(|s| s.parse().unwrap()).collect();
        if v[0] < 20.0 || v[2] < 20.0 {
            continue;
        }
        let measured = (v[0] / v[1]) / (v[2] / v[3]);
        let planted = truth.recovery_groups[&format!("{}/compensated", r[0])]
            .mean_return_probability
            / truth.recovery_groups[&format!("{}/uncompensated", r[0])].mean_return_probability;
        let tol = log_ratio_tolerance(v[0], v[1], v[2], v[3], 0.0);
        assert!(
            (measured.ln() - planted.ln()).abs() <= tol,
            "policy {} {}: lift {measured:.4}, planted {planted:.4}, log tolerance {tol:.4}",
            r[0],
            r[1]
        );
        checked += 1;
    }
    report_lines.push(format!(
        "policy: {checked} of {} cells checked against the planted lift",
        cells.len()
    ));
    assert!(
        checked >= 12,
        "{checked} cells with 20 repurchases in each arm"
    );
}

/// Every reconciled cell's actual and planned amount, and the exceptions by reason, as the
/// generator computed them entry by entry (an independent implementation of the same rule).
async fn assert_finance_matches_truth(
    ctx: &datafusion::prelude::SessionContext,
    truth: &retention::generate::FinanceTruth,
) {
    let rows = rows_of(
        ctx,
        "SELECT month, program_id, cost_center, actual, planned FROM budget_reconciliation",
    )
    .await;
    let mut actual = std::collections::BTreeMap::new();
    let mut planned = std::collections::BTreeMap::new();
    for r in rows {
        let key = format!("{}/{}/{}", r[0], r[1], r[2]);
        if r[3] != "0.00" || truth.actual.contains_key(&key) {
            actual.insert(key.clone(), r[3].clone());
        }
        if r[4] != "0.00" || truth.planned.contains_key(&key) {
            planned.insert(key, r[4].clone());
        }
    }
    assert_eq!(actual, truth.actual);
    assert_eq!(planned, truth.planned);
    let rows = rows_of(
        ctx,
        "SELECT reason, count(*) FROM reconciliation_exceptions GROUP BY reason",
    )
    .await;
    let exceptions: std::collections::BTreeMap<String, u64> = rows
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect();
    assert_eq!(exceptions, truth.exceptions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_ledger_entries_reconcile_to_the_cent() {
    let opts = retention::generate::GenerateOptions {
        seed: 11,
        customers: 2_000,
        ledger_lines: 5_000,
        ..Default::default()
    };
    let (_lake, ws, generated) = generated_lake(opts, FINANCE_JOBS).await;
    let entries = generated.tables["spend_ledger"];
    assert!(entries >= 1_000_000, "{entries} ledger entries");
    let ctx = ws.query_session().await.unwrap();
    assert_finance_matches_truth(&ctx, &generated.truth.finance).await;
    // Every entry is accounted for: in the reconciliation or an exception.
    let counted = rows_of(
        &ctx,
        "SELECT (SELECT sum(accrual_entries + invoice_entries + reversal_entries + credit_note_entries) FROM budget_reconciliation)
              + (SELECT count(*) FROM reconciliation_exceptions WHERE source = 'ledger') AS n",
    )
    .await;
    assert_eq!(counted[0][0], entries.to_string());
}

/// The run's as-of day: `latest` is the latest order day of the raw `orders` (resolved once), `--as-of DAY` binds one day for every job of a backfill, and `_runs`
/// records the day each job was bound to (NULL for jobs that do not read `$as_of`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_is_resolved_once_per_run_and_recorded() {
    use retention::values::{AsOf, Trigger};
    let opts = retention::generate::GenerateOptions {
        seed: 11,
        customers: 1_500,
        months: 8,
        ..Default::default()
    };
    let (_lake, ws, _generated) = generated_lake(opts, &["+customer_churn"]).await;
    let ctx = ws.query_session().await.unwrap();
    let latest = rows_of(
        &ctx,
        "SELECT CAST(max(CAST(order_ts AS DATE)) AS VARCHAR) FROM order_experience",
    )
    .await
    .remove(0)
    .remove(0);
    // The generator's 8 months from 2024-11-01 end on 2025-06-30.
    assert_eq!(latest, "2025-06-30");
    assert_eq!(
        rows_of(
            &ctx,
            "SELECT DISTINCT CAST(as_of_date AS VARCHAR) FROM customer_churn"
        )
        .await,
        vec![vec![latest.clone()]]
    );

    // A backfill as of 2025-02-28: every customer with a completed order on or before it, and
    // nothing after it.
    let day = chrono::NaiveDate::from_ymd_opt(2025, 2, 28).unwrap();
    let selected = ws
        .graph
        .select(&["customer_churn".parse().unwrap()], false)
        .unwrap();
    let mut plan = ws.plan(&selected, Trigger::Manual).unwrap();
    plan.as_of = Some(AsOf::Day(day));
    retention::execute::execute(ws.clone(), &plan, 2)
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let ctx = ws.query_session().await.unwrap();
    let got = rows_of(
        &ctx,
        "SELECT count(*), CAST(max(as_of_date) AS VARCHAR), CAST(max(last_order_date) <= DATE '2025-02-28' AS VARCHAR) FROM customer_churn",
    )
    .await;
    let expected = rows_of(
        &ctx,
        "SELECT count(DISTINCT customer_id) FROM order_experience WHERE status = 'completed' AND order_date <= DATE '2025-02-28'",
    )
    .await;
    assert_eq!(got[0][0], expected[0][0]);
    assert_eq!(got[0][1..], ["2025-02-28".to_string(), "true".to_string()]);
    let ledger = rows_of(
        &ctx,
        &format!(
            "SELECT job, CAST(as_of AS VARCHAR) FROM _runs WHERE run_id = '{}' OR (job = 'order_experience' AND run_id <> '{}') ORDER BY job",
            plan.run_id, plan.run_id
        ),
    )
    .await;
    assert_eq!(
        ledger,
        vec![
            vec!["customer_churn".to_string(), "2025-02-28".to_string()],
            // Incremental: its intervals end at the as-of day, `latest` of the raw orders.
            vec!["order_experience".to_string(), latest.clone()],
        ]
    );
}
