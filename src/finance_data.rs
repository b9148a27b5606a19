//! The finance side of the synthetic marketplace: a monthly budget plan (with a revision), a
//! spend ledger in several currencies that books the same spend `program_roi` sees (accruals and
//! their reversals, invoices, credit notes, late postings, unmapped entries), and monthly FX
//! rates. Every expected reconciliation figure is computed here too, for `truth.json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use url::Url;

use crate::error::Result;
use crate::generate::{parquet_bytes, put};
use crate::udf::half_even_to_cents;

/// How each program is billed: cost center, vendor and the currency its vendor invoices in.
pub const BILLING: [(i64, &str, &str, &str); 4] = [
    (1, "CC-TRUST", "VoucherPay", "USD"),
    (2, "CC-GROWTH", "MailCo", "EUR"),
    (3, "CC-GROWTH", "LoyaltyHub", "GBP"),
    (4, "CC-TRUST", "AdNet", "USD"),
];
/// Currencies and their starting rate to USD, as 8-decimal integers.
const CURRENCIES: [(&str, i128); 4] = [
    ("USD", 100_000_000),
    ("EUR", 108_000_000),
    ("GBP", 127_000_000),
    ("SEK", 9_500_000),
];

/// Expected reconciliation, written to `truth.json` under `finance`.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct FinanceTruth {
    pub reporting_currency: String,
    /// `month/program/cost_center` -> actual in reporting currency (each entry converted and
    /// rounded half-even to cents, then summed), as decimal text. Mapped entries only.
    pub actual: BTreeMap<String, String>,
    /// `month/program/cost_center` -> latest plan version's amount, converted the same way.
    pub planned: BTreeMap<String, String>,
    /// Exceptions by reason.
    pub exceptions: BTreeMap<String, u64>,
    /// Ledger entries by type.
    pub entries: BTreeMap<String, u64>,
    /// Month (YYYY-MM) whose SEK rate is deliberately missing.
    pub missing_rate: String,
}

/// Spend the marketplace simulation produced, per program index and month (`YYYY-MM`), in
/// reporting-currency cents: marketing spend, and redeemed voucher value for recovery.
pub type MonthlySpend = BTreeMap<(usize, String), i128>;

/// `YYYY-MM` of a day.
pub fn month_key(d: NaiveDate) -> String {
    format!("{:04}-{:02}", d.year(), d.month())
}

fn first_of(month: &str) -> NaiveDate {
    NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").expect("month key")
}

fn days(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

fn cents_text(c: i128) -> String {
    let sign = if c < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", c.abs() / 100, c.abs() % 100)
}

/// Local amount (cents) for a reporting amount at `rate` (8 decimals), rounded half-even.
fn to_local(reporting_cents: i128, rate: i128) -> i128 {
    // reporting / rate, with 10 extra decimals then rounded to cents.
    let scaled = reporting_cents * 100_000_000 * 100_000_000 / rate; // scale 2 + 8
    half_even_to_cents(scaled, 10)
}

/// Reporting cents for a local amount at `rate`: the rule the reconciliation uses.
pub fn to_reporting(local_cents: i128, rate: i128) -> i128 {
    half_even_to_cents(local_cents * rate, 10)
}

struct Entry {
    id: i64,
    posted: NaiveDate,
    service_month: String,
    program_id: Option<i64>,
    cost_center: &'static str,
    vendor: &'static str,
    invoice_id: String,
    currency: &'static str,
    amount: i128,
    entry_type: &'static str,
}

/// Write `budget_plan`, `fx_rates` and `spend_ledger` under `root`; returns row counts and truth.
pub async fn generate(
    store: &Arc<dyn ObjectStore>,
    root: &StorePath,
    location: &Url,
    opts: &crate::generate::GenerateOptions,
    spend: &MonthlySpend,
    program_ids: &[i64],
) -> Result<(BTreeMap<String, u64>, FinanceTruth)> {
    let months: Vec<String> = (0..opts.months)
        .map(|m| month_key(opts.start + chrono::Months::new(m)))
        .collect();
    let months = months.as_slice();
    let lines_per_entry = opts.ledger_lines.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xF1_4A_4C_E5);
    let mut truth = FinanceTruth {
        reporting_currency: "USD".into(),
        ..Default::default()
    };

    // FX: a small random walk per currency; one month's SEK rate is missing on purpose.
    let missing = months[months.len() / 2].clone();
    truth.missing_rate = missing.clone();
    let mut rates: BTreeMap<(String, &str), i128> = BTreeMap::new();
    let mut level: BTreeMap<&str, i128> = CURRENCIES.iter().copied().collect();
    for m in months {
        for (c, _) in CURRENCIES {
            if c != "USD" {
                let step = rng.random_range(-150_000i128..=150_000);
                *level.get_mut(c).expect("currency") += step;
            }
            if !(c == "SEK" && *m == missing) {
                rates.insert((m.clone(), c), level[c]);
            }
        }
    }

    // The ledger.
    let mut entries: Vec<Entry> = Vec::new();
    let mut next_id = 0i64;
    let mut id = || {
        next_id += 1;
        next_id
    };
    let last =
        first_of(months.last().expect("months")) + chrono::Months::new(1) - Duration::days(1);
    for (pi, &(program_id, cost_center, vendor, currency)) in BILLING.iter().enumerate() {
        for m in months {
            let Some(&reporting) = spend.get(&(pi, m.clone())) else {
                continue;
            };
            if reporting == 0 {
                continue;
            }
            let rate = rates[&(m.clone(), currency)];
            let invoice = to_local(reporting, rate);
            let start = first_of(m);
            let month_end = start + chrono::Months::new(1) - Duration::days(1);
            let next = month_end + Duration::days(1);
            let invoice_id = format!("INV-{program_id}-{m}");
            // Accrue an estimate at month end, reverse it next month, book the invoice.
            let estimate = invoice * rng.random_range(90..=110) / 100;
            entries.push(Entry {
                id: id(),
                posted: month_end,
                service_month: m.clone(),
                program_id: Some(program_id),
                cost_center,
                vendor,
                invoice_id: format!("ACR-{program_id}-{m}"),
                currency,
                amount: estimate,
                entry_type: "accrual",
            });
            entries.push(Entry {
                id: id(),
                posted: next,
                service_month: m.clone(),
                program_id: Some(program_id),
                cost_center,
                vendor,
                invoice_id: format!("ACR-{program_id}-{m}"),
                currency,
                amount: -estimate,
                entry_type: "reversal",
            });
            // 8% of invoices post late: two to three months after their service month.
            let posted = if rng.random_bool(0.08) {
                next + chrono::Months::new(rng.random_range(1..=2))
                    + Duration::days(rng.random_range(0..20))
            } else {
                next + Duration::days(rng.random_range(4..25))
            };
            entries.push(Entry {
                id: id(),
                posted,
                service_month: m.clone(),
                program_id: Some(program_id),
                cost_center,
                vendor,
                invoice_id: invoice_id.clone(),
                currency,
                amount: invoice,
                entry_type: "invoice",
            });
            if rng.random_bool(0.10) {
                let credit = -(invoice * 5 / 100).max(1);
                entries.push(Entry {
                    id: id(),
                    posted: posted + Duration::days(rng.random_range(3..15)),
                    service_month: m.clone(),
                    program_id: Some(program_id),
                    cost_center,
                    vendor,
                    invoice_id: format!("CN-{invoice_id}"),
                    currency,
                    amount: credit,
                    entry_type: "credit_note",
                });
            }
        }
    }
    // Entries that cannot be mapped: no program, an unknown program, a currency the plan does
    // not have for the program, and SEK in the month without a SEK rate.
    for (i, m) in months.iter().enumerate() {
        let start = first_of(m);
        let posted = start + Duration::days(rng.random_range(0..27));
        let amount = rng.random_range(1_000i128..50_000);
        entries.push(Entry {
            id: id(),
            posted,
            service_month: m.clone(),
            program_id: None,
            cost_center: "CC-OPS",
            vendor: "Misc",
            invoice_id: format!("MISC-{m}"),
            currency: "USD",
            amount,
            entry_type: "invoice",
        });
        if i % 3 == 0 {
            entries.push(Entry {
                id: id(),
                posted,
                service_month: m.clone(),
                program_id: Some(99),
                cost_center: "CC-GROWTH",
                vendor: "Unknown Ltd",
                invoice_id: format!("UNK-{m}"),
                currency: "EUR",
                amount: amount / 2,
                entry_type: "invoice",
            });
        }
        if i % 4 == 1 {
            entries.push(Entry {
                id: id(),
                posted,
                service_month: m.clone(),
                program_id: Some(2),
                cost_center: "CC-GROWTH",
                vendor: "MailCo UK",
                invoice_id: format!("GBP-{m}"),
                currency: "GBP",
                amount: amount / 3,
                entry_type: "invoice",
            });
        }
        if *m == missing || i % 5 == 2 {
            entries.push(Entry {
                id: id(),
                posted,
                service_month: m.clone(),
                program_id: Some(4),
                cost_center: "CC-TRUST",
                vendor: "NordicAds",
                invoice_id: format!("SEK-{m}"),
                currency: "SEK",
                amount: amount * 10,
                entry_type: "invoice",
            });
        }
    }
    entries.retain(|e| e.posted <= last);
    // Volume: book every entry as `lines_per_entry` lines that add up to it (the first line
    // takes the remainder); each line is converted and rounded on its own.
    if lines_per_entry > 1 {
        let k = lines_per_entry as i128;
        let mut lines = Vec::with_capacity(entries.len() * lines_per_entry);
        for (n, e) in entries.into_iter().enumerate() {
            let base = e.amount / k;
            for i in 0..lines_per_entry {
                lines.push(Entry {
                    id: (n * lines_per_entry + i + 1) as i64,
                    posted: e.posted,
                    service_month: e.service_month.clone(),
                    program_id: e.program_id,
                    cost_center: e.cost_center,
                    vendor: e.vendor,
                    invoice_id: e.invoice_id.clone(),
                    currency: e.currency,
                    amount: if i == 0 {
                        e.amount - base * (k - 1)
                    } else {
                        base
                    },
                    entry_type: e.entry_type,
                });
            }
        }
        entries = lines;
    }

    // The plan: per month, program, cost center, in the program's currency; SEK lines for the
    // NordicAds spend; version 2 revises a third of the months; one line for an unknown program.
    let mut plan: Vec<(String, i64, &str, &str, i128, i32)> = Vec::new();
    for (pi, &(program_id, cost_center, _, currency)) in BILLING.iter().enumerate() {
        for (i, m) in months.iter().enumerate() {
            let reporting = spend.get(&(pi, m.clone())).copied().unwrap_or(0);
            if reporting == 0 {
                continue;
            }
            let rate = rates[&(m.clone(), currency)];
            let base = to_local(reporting, rate);
            let planned = base * rng.random_range(85..=115) / 100;
            plan.push((m.clone(), program_id, cost_center, currency, planned, 1));
            if i % 3 == 0 {
                plan.push((
                    m.clone(),
                    program_id,
                    cost_center,
                    currency,
                    planned * rng.random_range(95..=105) / 100,
                    2,
                ));
            }
        }
    }
    for (i, m) in months.iter().enumerate() {
        if *m == missing || i % 5 == 2 {
            plan.push((m.clone(), 4, "CC-TRUST", "SEK", 2_000_000, 1));
        }
    }
    plan.push((months[0].clone(), 77, "CC-GROWTH", "USD", 100_000, 1));

    // Expected figures.
    let known: Vec<i64> = program_ids.to_vec();
    let latest_plan: BTreeMap<(String, i64, &str, &str), (i32, i128)> =
        plan.iter().fold(BTreeMap::new(), |mut acc, p| {
            let key = (p.0.clone(), p.1, p.2, p.3);
            let e = acc.entry(key).or_insert((p.5, p.4));
            if p.5 > e.0 {
                *e = (p.5, p.4);
            }
            acc
        });
    let mut actual: BTreeMap<String, i128> = BTreeMap::new();
    for e in &entries {
        *truth.entries.entry(e.entry_type.into()).or_default() += 1;
        let reason = match e.program_id {
            None => Some("unknown_program"),
            Some(p) if !known.contains(&p) => Some("unknown_program"),
            Some(_) if !rates.contains_key(&(e.service_month.clone(), e.currency)) => {
                Some("missing_fx_rate")
            }
            Some(p)
                if !latest_plan.contains_key(&(
                    e.service_month.clone(),
                    p,
                    e.cost_center,
                    e.currency,
                )) =>
            {
                Some("currency_not_in_plan")
            }
            Some(_) => None,
        };
        match reason {
            Some(r) => *truth.exceptions.entry(r.into()).or_default() += 1,
            None => {
                let key = format!(
                    "{}/{}/{}",
                    e.service_month,
                    e.program_id.expect("mapped"),
                    e.cost_center
                );
                *actual.entry(key).or_default() +=
                    to_reporting(e.amount, rates[&(e.service_month.clone(), e.currency)]);
            }
        }
    }
    let mut planned: BTreeMap<String, i128> = BTreeMap::new();
    for ((m, p, cc, cur), (_, amount)) in &latest_plan {
        if !known.contains(p) {
            *truth
                .exceptions
                .entry("plan_for_unknown_program".into())
                .or_default() += 1;
            continue;
        }
        match rates.get(&(m.clone(), *cur)) {
            Some(rate) => {
                *planned.entry(format!("{m}/{p}/{cc}")).or_default() += to_reporting(*amount, *rate)
            }
            None => {
                *truth
                    .exceptions
                    .entry("plan_missing_fx_rate".into())
                    .or_default() += 1
            }
        }
    }
    truth.actual = actual
        .into_iter()
        .map(|(k, v)| (k, cents_text(v)))
        .collect();
    truth.planned = planned
        .into_iter()
        .map(|(k, v)| (k, cents_text(v)))
        .collect();

    // Write: fx_rates and budget_plan as single files, the ledger by posting day.
    let mut counts = BTreeMap::new();
    let fx_batch = RecordBatch::try_new(
        fx_schema(),
        vec![
            Arc::new(StringArray::from(
                rates.keys().map(|k| k.0.clone()).collect::<Vec<_>>(),
            )) as ArrayRef,
            Arc::new(StringArray::from(
                rates.keys().map(|k| k.1).collect::<Vec<_>>(),
            )),
            Arc::new(
                Decimal128Array::from(rates.values().copied().collect::<Vec<_>>())
                    .with_precision_and_scale(18, 8)?,
            ),
        ],
    )?;
    write_file(
        store,
        root,
        location,
        "fx_rates",
        None,
        fx_batch,
        &mut counts,
    )
    .await?;

    let plan_schema = plan_schema();
    let plan_batch = RecordBatch::try_new(
        plan_schema.clone(),
        vec![
            Arc::new(StringArray::from(
                plan.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
            )) as ArrayRef,
            Arc::new(Int64Array::from(
                plan.iter().map(|p| p.1).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                plan.iter().map(|p| p.2).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                plan.iter().map(|p| p.3).collect::<Vec<_>>(),
            )),
            Arc::new(
                Decimal128Array::from(plan.iter().map(|p| p.4).collect::<Vec<_>>())
                    .with_precision_and_scale(18, 2)?,
            ),
            Arc::new(Int32Array::from(
                plan.iter().map(|p| p.5).collect::<Vec<_>>(),
            )),
        ],
    )?;
    write_file(
        store,
        root,
        location,
        "budget_plan",
        None,
        plan_batch,
        &mut counts,
    )
    .await?;

    let mut by_day: BTreeMap<NaiveDate, Vec<&Entry>> = BTreeMap::new();
    for e in &entries {
        by_day.entry(e.posted).or_default().push(e);
    }
    let schema = ledger_schema();
    for (day, rows) in by_day {
        let batch = ledger_batch(&schema, &rows)?;
        write_file(
            store,
            root,
            location,
            "spend_ledger",
            Some(day),
            batch,
            &mut BTreeMap::new(),
        )
        .await?;
    }
    counts.insert("spend_ledger".to_string(), entries.len() as u64);
    Ok((counts, truth))
}

/// Write one table file (`<table>/part-0000.parquet`, or under `dt=<day>/`) and count its rows.
async fn write_file(
    store: &Arc<dyn ObjectStore>,
    root: &StorePath,
    location: &Url,
    table: &str,
    day: Option<NaiveDate>,
    batch: RecordBatch,
    counts: &mut BTreeMap<String, u64>,
) -> Result<()> {
    *counts.entry(table.to_string()).or_default() += batch.num_rows() as u64;
    let mut path = root.clone().join(table);
    if let Some(day) = day {
        path = path.join(format!("dt={day}").as_str());
    }
    let path = path.join("part-0000.parquet");
    put(
        store,
        &path,
        parquet_bytes(batch.schema(), &[batch])?,
        location,
    )
    .await
}

/// Schema of `fx_rates`.
pub fn fx_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("month", DataType::Utf8, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("rate_to_reporting", DataType::Decimal128(18, 8), false),
    ]))
}

/// Schema of `budget_plan`.
pub fn plan_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("month", DataType::Utf8, false),
        Field::new("program_id", DataType::Int64, false),
        Field::new("cost_center", DataType::Utf8, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("planned_amount", DataType::Decimal128(18, 2), false),
        Field::new("version", DataType::Int32, false),
    ]))
}

/// Schema of `spend_ledger` (without the `dt` partition, the posting day).
pub fn ledger_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("entry_id", DataType::Int64, false),
        Field::new("posted_date", DataType::Date32, false),
        Field::new("service_month", DataType::Utf8, false),
        Field::new("program_id", DataType::Int64, true),
        Field::new("cost_center", DataType::Utf8, false),
        Field::new("vendor", DataType::Utf8, false),
        Field::new("invoice_id", DataType::Utf8, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("amount", DataType::Decimal128(18, 2), false),
        Field::new("entry_type", DataType::Utf8, false),
    ]))
}

fn ledger_batch(schema: &SchemaRef, rows: &[&Entry]) -> Result<RecordBatch> {
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|e| e.id).collect::<Vec<_>>(),
            )) as ArrayRef,
            Arc::new(Date32Array::from(
                rows.iter().map(|e| days(e.posted)).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|e| e.service_month.clone())
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|e| e.program_id).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|e| e.cost_center).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|e| e.vendor).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|e| e.invoice_id.clone())
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|e| e.currency).collect::<Vec<_>>(),
            )),
            Arc::new(
                Decimal128Array::from(rows.iter().map(|e| e.amount).collect::<Vec<_>>())
                    .with_precision_and_scale(18, 2)?,
            ),
            Arc::new(StringArray::from(
                rows.iter().map(|e| e.entry_type).collect::<Vec<_>>(),
            )),
        ],
    )?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_half_even() {
        // 10.00 EUR at 1.08123456 USD/EUR = 10.8123456 -> 10.81 USD
        assert_eq!(to_reporting(1000, 108_123_456), 1081);
        // 0.25 at 0.5 = 0.125 -> 0.12; 0.35 at 0.5 = 0.175 -> 0.18
        assert_eq!(to_reporting(25, 50_000_000), 12);
        assert_eq!(to_reporting(35, 50_000_000), 18);
        // 100.00 USD in EUR at 1.08 = 92.592592.. -> 92.59
        assert_eq!(to_local(10_000, 108_000_000), 9259);
        assert_eq!(cents_text(-5), "-0.05");
    }
}
