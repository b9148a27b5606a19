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
mod shards;
mod simulation;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use chrono::NaiveDate;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use url::Url;

pub use finance::{BILLING, fx_schema, ledger_schema, month_key, plan_schema, to_reporting};
pub use model::{
    CARRIERS, CHANNELS, FinanceTruth, GenerateOptions, Group, Issue, MonthlySpend, OBSERVED_DAYS,
    PlantedBgNbd, ProgramTruth, REGIONS, SETTLED_DAYS, Truth, VOUCHER_RATE, VOUCHER_RESTORE,
};
pub use raw::{EVENT_TABLES, parquet_bytes, put, schema};

use crate::error::{Error, Result};
use crate::store::Stores;
use model::{date_of_day, day_of_date};
use raw::RawWriter;
use shards::Shards;
use simulation::signups_per_day;

/// Row counts written per table, and the planted truth.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Generated {
    pub tables: BTreeMap<String, u64>,
    pub truth: Truth,
}

/// What an existing lake was generated with and how far, read back from its `truth.json`.
#[derive(Debug, Clone, Deserialize)]
struct LakeExtent {
    seed: u64,
    customers: u64,
    start: NaiveDate,
    months: u32,
    ledger_lines: usize,
    end: NaiveDate,
    planted_bgnbd: Option<PlantedBgNbd>,
}

impl LakeExtent {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            seed: self.seed,
            customers: self.customers,
            months: self.months,
            start: self.start,
            ledger_lines: self.ledger_lines,
            bgnbd: self.planted_bgnbd,
        }
    }
}

/// A lake already under `raw_root`: the options it was generated with and its last day, or
/// None when the root has no `truth.json`.
pub async fn existing_lake(
    stores: &Stores,
    raw_root: &Url,
) -> Result<Option<(GenerateOptions, NaiveDate)>> {
    let (store, root) = stores.store_for(raw_root)?;
    let path = root.clone().join("truth.json");
    let bytes = match store.get(&path).await {
        Ok(got) => got.bytes().await.map_err(|e| Error::storage(raw_root, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::storage(raw_root, e)),
    };
    let lake: LakeExtent = serde_json::from_slice(&bytes).map_err(|e| Error::Storage {
        location: format!("{raw_root}truth.json"),
        message: format!(
            "line {} column {}: expected the generator's truth with seed, customers, start, \
             months, ledger_lines and end",
            e.line(),
            e.column()
        ),
        source: Some(Box::new(e)),
    })?;
    Ok(Some((lake.options(), lake.end)))
}

/// The first and one-past-the-last day of `opts`' period.
fn period(opts: &GenerateOptions) -> (i64, i64) {
    let start_day = day_of_date(opts.start);
    (
        start_day,
        day_of_date(opts.start + chrono::Months::new(opts.months)),
    )
}

/// `through` as a day of `opts`' period: its last day when None.
fn through_day(opts: &GenerateOptions, through: Option<NaiveDate>) -> Result<i64> {
    let (start_day, end_day) = period(opts);
    let Some(date) = through else {
        return Ok(end_day - 1);
    };
    let day = day_of_date(date);
    if (start_day..end_day).contains(&day) {
        return Ok(day);
    }
    Err(Error::Argument {
        flag: "--through",
        key: "through".into(),
        message: format!(
            "{date} is outside the generated period {} to {} (--start and --months)",
            opts.start,
            date_of_day(end_day - 1)
        ),
    })
}

/// Generate the marketplace under `raw_root` through `through` (the period's last day when
/// None), and write `truth.json` there.
pub async fn generate(
    stores: &Stores,
    raw_root: &Url,
    opts: &GenerateOptions,
    through: Option<NaiveDate>,
) -> Result<Generated> {
    let through = through_day(opts, through)?;
    let days = period(opts).0..=through;
    write(stores, raw_root, opts, days, true, simulation_threads()).await
}

/// Threads the shards are simulated on: one per core.
fn simulation_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Extend the lake under `raw_root`, generated through an earlier day, through `through`: add
/// the partitions of the days after its last one (with the late rows they bring for earlier
/// orders) and update `truth.json`. No earlier file is written again; the result is the lake
/// `generate` would have written through `through` in one go.
pub async fn extend(stores: &Stores, raw_root: &Url, through: NaiveDate) -> Result<Generated> {
    let Some((opts, end)) = existing_lake(stores, raw_root).await? else {
        return Err(Error::Argument {
            flag: "--through",
            key: "through".into(),
            message: format!("no generated lake to extend at {raw_root} (no truth.json)"),
        });
    };
    let through = through_day(&opts, Some(through))?;
    let first = day_of_date(end) + 1;
    if through < first {
        return Err(Error::Argument {
            flag: "--through",
            key: "through".into(),
            message: format!(
                "the lake at {raw_root} is already generated through {end}; pass a later day"
            ),
        });
    }
    write(
        stores,
        raw_root,
        &opts,
        first..=through,
        false,
        simulation_threads(),
    )
    .await
}

/// Simulate `opts`' whole period on `threads` threads and write the files of `days` (and, when
/// `creates`, those of no day), with the truth as of the last of them.
async fn write(
    stores: &Stores,
    raw_root: &Url,
    opts: &GenerateOptions,
    days: RangeInclusive<i64>,
    creates: bool,
    threads: usize,
) -> Result<Generated> {
    let through = *days.end();
    let mut raw = RawWriter::new(stores, raw_root, days, creates)?;
    let (start_day, end_day) = period(opts);
    let signups = signups_per_day(opts.customers, start_day, end_day - start_day);
    let mut shards = Shards::start(opts, (start_day, end_day), &signups, through, threads);
    let tally = simulate(&mut shards, &mut raw, start_day, end_day, through).await?;
    let spend_by_month = shards.finish().await?;
    let programs = model::programs(opts.months);
    raw.write_programs(&programs, &model::program_days(opts.start, &programs))
        .await?;
    let mut truth = tally.into_truth(Truth::planted(opts, through + 1), &programs);
    // Finance: plan, ledger and FX consistent with the spend of the whole period.
    let program_ids: Vec<i64> = truth.programs.iter().map(|p| p.program_id).collect();
    truth.finance = finance::generate(&mut raw, opts, &spend_by_month, &program_ids).await?;
    let json = serde_json::to_vec_pretty(&truth).map_err(|e| Error::storage(raw_root, e))?;
    raw.write_json("truth.json", json).await?;
    Ok(Generated {
        tables: raw.counts,
        truth,
    })
}

/// Take the shards' days from `start_day` to `end_day` in order, writing each day's rows and
/// sign-ups as it closes; returns the truth's tallies as of `through`.
async fn simulate(
    shards: &mut Shards,
    raw: &mut RawWriter,
    start_day: i64,
    end_day: i64,
    through: i64,
) -> Result<simulation::TruthTally> {
    let mut truth = None;
    for day in start_day..end_day {
        let closed = shards.next_day().await?;
        raw.write_customers(day, closed.customers).await?;
        raw.write_day(day, closed.rows).await?;
        if day == through {
            truth = closed.truth;
        }
    }
    Ok(truth.expect("through lies in the period"))
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
        let ga = generate(&a, &root, &opts, None).await.unwrap();
        let gb = generate(&b, &root, &opts, None).await.unwrap();
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
mod extend_tests {
    use super::*;
    use bytes::Bytes;
    use datafusion::arrow::array::{ArrayRef, AsArray};
    use datafusion::arrow::datatypes::{Decimal128Type, Int64Type};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use futures::TryStreamExt;
    use object_store::ObjectStore;

    type Objects = BTreeMap<String, (Bytes, Option<String>)>;

    /// Every object under the store: path -> (bytes, e_tag).
    async fn objects(stores: &Stores) -> Objects {
        let (store, _) = stores.store_for(&root()).unwrap();
        let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut all = BTreeMap::new();
        for m in metas {
            let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            all.insert(m.location.to_string(), (bytes, m.e_tag));
        }
        all
    }

    fn root() -> Url {
        Url::parse("memory:///raw/").unwrap()
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn opts() -> GenerateOptions {
        GenerateOptions {
            customers: 400,
            months: 3,
            ..Default::default()
        }
    }

    /// A column over a table's files: its array in each batch, in path order.
    fn column(all: &Objects, table: &str, column: &str) -> Vec<ArrayRef> {
        let mut arrays = Vec::new();
        for (path, (bytes, _)) in all.range(format!("raw/{table}/")..format!("raw/{table}0")) {
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                arrays.push(batch.unwrap().column_by_name(column).expect(path).clone());
            }
        }
        arrays
    }

    /// Sum of a money column over a table's files, in cents.
    fn money_sum(all: &Objects, table: &str, name: &str) -> i128 {
        let arrays = column(all, table, name);
        let sums = arrays.iter().map(|a| {
            a.as_primitive::<Decimal128Type>()
                .iter()
                .flatten()
                .sum::<i128>()
        });
        sums.sum()
    }

    fn bytes_only(all: &Objects) -> BTreeMap<&String, &Bytes> {
        all.iter().map(|(p, (b, _))| (p, b)).collect()
    }

    #[tokio::test]
    async fn a_lake_extended_day_by_day_equals_one_generated_in_one_go() {
        let (extended, one_go) = (Stores::default(), Stores::default());
        let first = generate(&extended, &root(), &opts(), Some(day("2024-12-10")))
            .await
            .unwrap();
        assert_eq!(first.truth.end, "2024-12-10");
        let before = objects(&extended).await;
        assert!(!before.keys().any(|p| p.contains("dt=2024-12-11")));

        let added = extend(&extended, &root(), day("2024-12-11")).await.unwrap();
        assert!(added.tables["orders"] > 0 && added.tables["orders"] < first.tables["orders"]);
        let after = objects(&extended).await;
        // No earlier file was written again: each keeps its e_tag (truth.json is updated).
        for (path, (_, tag)) in &before {
            if !path.ends_with("truth.json") {
                assert_eq!(&after[path].1, tag, "{path} was rewritten");
            }
        }
        let new: Vec<&String> = after.keys().filter(|p| !before.contains_key(*p)).collect();
        assert!(new.iter().all(|p| p.contains("2024-12-11")), "{new:?}");
        assert!(
            new.iter()
                .any(|p| p.starts_with("raw/orders/dt=2024-12-11/"))
        );
        assert!(
            new.iter()
                .any(|p| p.starts_with("raw/customers/part-2024-12-11"))
        );

        let whole = generate(&one_go, &root(), &opts(), Some(day("2024-12-11")))
            .await
            .unwrap();
        assert_eq!(added.truth, whole.truth);
        assert_eq!(bytes_only(&after), bytes_only(&objects(&one_go).await));

        // The truth's control totals are those of the rows in the cut lake.
        let cents = |t: &str| t.replace('.', "").parse::<i128>().unwrap();
        assert_eq!(
            money_sum(&after, "orders", "gmv"),
            cents(&whole.truth.gmv_total)
        );
        assert_eq!(
            money_sum(&after, "refunds", "amount"),
            cents(&whole.truth.refund_total)
        );

        // Extending to the period's end gives the lake of a plain `generate`.
        let full = Stores::default();
        let plain = generate(&full, &root(), &opts(), None).await.unwrap();
        let rest = extend(&extended, &root(), day("2025-01-31")).await.unwrap();
        assert_eq!(rest.truth, plain.truth);
        assert_eq!(
            bytes_only(&objects(&extended).await),
            bytes_only(&objects(&full).await)
        );
    }

    /// Every value of an Int64 column over a table's files, in path order then row order.
    fn ids(all: &Objects, table: &str, name: &str) -> Vec<i64> {
        let arrays = column(all, table, name);
        let values = arrays
            .iter()
            .flat_map(|a| a.as_primitive::<Int64Type>().iter().flatten());
        values.collect()
    }

    #[tokio::test]
    async fn shards_number_customers_in_signup_order_and_never_share_an_id() {
        let stores = Stores::default();
        let got = generate(&stores, &root(), &opts(), None).await.unwrap();
        let all = objects(&stores).await;
        // Customers: 1..=400 in the order they signed up, over the shards.
        let customers = ids(&all, "customers", "customer_id");
        assert_eq!(customers, (1..=400).collect::<Vec<_>>());
        // Each shard's customers order: every shard has orders.
        let mut orders = ids(&all, "orders", "order_id");
        assert_eq!(orders.len() as u64, got.tables["orders"]);
        let residues: std::collections::BTreeSet<i64> =
            orders.iter().map(|id| id % shards::SHARDS as i64).collect();
        assert_eq!(residues.len() as u64, shards::SHARDS);
        orders.sort();
        orders.dedup();
        assert_eq!(
            orders.len() as u64,
            got.tables["orders"],
            "an order id repeats"
        );
        // Every order's customer signed up.
        let buyers = ids(&all, "orders", "customer_id");
        assert!(buyers.iter().all(|c| (1..=400).contains(c)));
        let mut sessions = ids(&all, "sessions", "session_id");
        sessions.sort();
        sessions.dedup();
        assert_eq!(
            sessions.len() as u64,
            got.tables["sessions"],
            "a session id repeats"
        );
    }

    #[tokio::test]
    async fn the_lake_is_the_same_on_any_number_of_threads() {
        let opts = GenerateOptions {
            customers: 500,
            months: 3,
            ..Default::default()
        };
        let days = period(&opts).0..=period(&opts).1 - 1;
        let mut lakes = Vec::new();
        for threads in [1, 3, shards::SHARDS as usize] {
            let stores = Stores::default();
            let got = write(&stores, &root(), &opts, days.clone(), true, threads)
                .await
                .unwrap();
            lakes.push((got, objects(&stores).await));
        }
        assert!(lakes[0].1.len() > 300, "{} files", lakes[0].1.len());
        let lakes: Vec<_> = lakes.iter().map(|(g, l)| (g, bytes_only(l))).collect();
        assert_eq!(lakes[0], lakes[1]);
        assert_eq!(lakes[0], lakes[2]);
    }

    #[tokio::test]
    async fn extending_needs_a_lake_and_a_later_day_inside_the_period() {
        let stores = Stores::default();
        let e = extend(&stores, &root(), day("2024-12-11"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no generated lake to extend"), "{e}");
        generate(&stores, &root(), &opts(), Some(day("2024-12-10")))
            .await
            .unwrap();
        let e = extend(&stores, &root(), day("2024-12-10"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("already generated through 2024-12-10"),
            "{e}"
        );
        let e = extend(&stores, &root(), day("2025-02-01"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("outside the generated period 2024-11-01 to 2025-01-31"),
            "{e}"
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
