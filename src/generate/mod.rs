//! `retention generate`: a deterministic synthetic marketplace with planted effects. Customers
//! arrive over time and order again with a probability that bad experiences lower, recovery
//! vouchers partly restore and retention programs raise; every effect and control total is written
//! to `truth.json` beside the sources. Simulated day by day: only the customers' small state and
//! the events of the coming weeks are in memory, each day's rows are written as they close.
//!
//! `model` holds the planted truth and constants, `simulation` the marketplace, `finance` the
//! plan, ledger and FX tables, and `raw` the schemas and the files written.

mod finance;
mod model;
mod raw;
mod simulation;

use std::collections::BTreeMap;

use serde::Serialize;
use url::Url;

pub use finance::{BILLING, fx_schema, ledger_schema, month_key, plan_schema, to_reporting};
pub use model::{
    CARRIERS, CHANNELS, FinanceTruth, GenerateOptions, Group, Issue, MonthlySpend, OBSERVED_DAYS,
    PlantedBgNbd, ProgramTruth, REGIONS, SETTLED_DAYS, Truth, VOUCHER_RATE, VOUCHER_RESTORE,
};
pub use raw::{EVENT_TABLES, parquet_bytes, put, schema};

use crate::error::{Error, Result};
use crate::store::Stores;
use model::day_of_date;
use raw::{CUSTOMERS_PER_FILE, RawWriter};
use simulation::{Sim, signups_per_day};

/// Row counts written per table, and the planted truth.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Generated {
    pub tables: BTreeMap<String, u64>,
    pub truth: Truth,
}

/// Generate the marketplace under `raw_root` and write `truth.json` there.
pub async fn generate(
    stores: &Stores,
    raw_root: &Url,
    opts: &GenerateOptions,
) -> Result<Generated> {
    let mut raw = RawWriter::new(stores, raw_root)?;
    let start_day = day_of_date(opts.start);
    let end_day = day_of_date(opts.start + chrono::Months::new(opts.months));
    let mut sim = Sim::new(opts, Truth::planted(opts, end_day), start_day, end_day);
    let signups = signups_per_day(opts.customers, start_day, end_day - start_day);
    simulate(&mut sim, &mut raw, start_day, &signups).await?;
    raw.write_programs(&sim.programs, &sim.program_days).await?;

    let (mut truth, spend_by_month) = sim.finish();
    // Finance: plan, ledger and FX consistent with the spend above.
    let program_ids: Vec<i64> = truth.programs.iter().map(|p| p.program_id).collect();
    truth.finance = finance::generate(&mut raw, opts, &spend_by_month, &program_ids).await?;
    let json = serde_json::to_vec_pretty(&truth).map_err(|e| Error::storage(raw_root, e))?;
    raw.write_json("truth.json", json).await?;
    Ok(Generated {
        tables: raw.counts,
        truth,
    })
}

/// Run the simulation day by day from `start_day`, with `signups[d]` sign-ups on day `d`,
/// writing each day's rows as it closes and the customers in parts.
async fn simulate(
    sim: &mut Sim,
    raw: &mut RawWriter,
    start_day: i64,
    signups: &[u64],
) -> Result<()> {
    let mut customer_parts = 0usize;
    for (d, &n) in signups.iter().enumerate() {
        let day = start_day + d as i64;
        sim.sign_up(day, n);
        if sim.customer_rows.0.len() >= CUSTOMERS_PER_FILE {
            let rows = std::mem::take(&mut sim.customer_rows);
            raw.write_customers(customer_parts, &rows).await?;
            customer_parts += 1;
        }
        sim.orders_due(day);
        sim.spend_marketing(day);
        for (d, rows) in sim.close_day(day) {
            raw.write_day(d, rows).await?;
        }
    }
    for (d, rows) in sim.rest() {
        raw.write_day(d, rows).await?;
    }
    if !sim.customer_rows.0.is_empty() {
        raw.write_customers(customer_parts, &sim.customer_rows)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::path::Path as StorePath;

    #[tokio::test]
    async fn same_seed_same_bytes_and_consistent_truth() {
        let opts = GenerateOptions {
            customers: 300,
            months: 4,
            ..Default::default()
        };
        let root = Url::parse("memory:///raw/").unwrap();
        let (a, b) = (Stores::default(), Stores::default());
        let ga = generate(&a, &root, &opts).await.unwrap();
        let gb = generate(&b, &root, &opts).await.unwrap();
        assert_eq!(ga, gb);
        assert_eq!(ga.tables["customers"], 300);
        let orders = ga.tables["orders"];
        assert!(orders > 300, "{orders}");
        // Settled completed orders (placed 30+ days before the end) have one primary issue each.
        let settled: u64 = ga.truth.orders_by_issue.values().sum();
        assert!(
            settled < orders && settled as f64 > orders as f64 * 0.5,
            "{settled} of {orders}"
        );
        assert!(ga.truth.first_order_groups["none"].cases > 0);
        let (sa, _) = a.store_for(&root).unwrap();
        let (sb, _) = b.store_for(&root).unwrap();
        let p = StorePath::from("raw/truth.json");
        assert_eq!(
            sa.get(&p).await.unwrap().bytes().await.unwrap(),
            sb.get(&p).await.unwrap().bytes().await.unwrap()
        );
    }
}

#[cfg(test)]
mod contract_tests {
    use super::*;

    /// The generator writes exactly what `jobs/sources.toml` promises.
    #[test]
    fn generated_schemas_match_the_source_contracts() {
        let root = Url::parse("memory:///raw/").unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let sources = crate::project::sources::load(&dir, &root).unwrap();
        let mut names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        let mut expected: Vec<&str> = EVENT_TABLES.to_vec();
        expected.extend([
            "customers",
            "programs",
            "budget_plan",
            "fx_rates",
            "spend_ledger",
        ]);
        expected.sort();
        assert_eq!(names, expected);
        for s in &sources {
            let generated = match s.name.as_str() {
                "budget_plan" => plan_schema(),
                "spend_ledger" => ledger_schema(),
                "fx_rates" => fx_schema(),
                other => schema(other),
            };
            crate::engine::contract::check_schema(s, &generated, "generated").unwrap();
            assert_eq!(generated.fields().len(), s.columns.len(), "{}", s.name);
            for (c, f) in s.columns.iter().zip(generated.fields()) {
                assert_eq!(
                    (&c.name, c.nullable),
                    (f.name(), f.is_nullable()),
                    "{}",
                    s.name
                );
            }
            let partitioned = EVENT_TABLES.contains(&s.name.as_str()) || s.name == "spend_ledger";
            assert_eq!(s.partition_columns.is_empty(), !partitioned, "{}", s.name);
        }
    }
}
