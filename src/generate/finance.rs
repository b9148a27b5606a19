//! The finance side of the synthetic marketplace: a monthly budget plan (with a revision), a
//! spend ledger in several currencies that books the same spend `program_roi` sees (accruals and
//! their reversals, invoices, credit notes, late postings, unmapped entries), and monthly FX
//! rates. Every expected reconciliation figure is computed here too, for `truth.json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::model::{FinanceTruth, GenerateOptions, MonthlySpend, cents_text};
use super::raw::{RawWriter, Rows, V};
use crate::engine::udf::half_even_to_cents;
use crate::error::Result;

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

/// FX rate to the reporting currency (8 decimals) by month and currency.
type Rates = BTreeMap<(String, &'static str), i128>;

/// `YYYY-MM` of a day.
pub fn month_key(d: NaiveDate) -> String {
    format!("{:04}-{:02}", d.year(), d.month())
}

fn first_of(month: &str) -> NaiveDate {
    NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").expect("month key")
}

fn last_of(month: &str) -> NaiveDate {
    first_of(month) + chrono::Months::new(1) - Duration::days(1)
}

/// Days since 1970-01-01, as `Date32` stores them.
fn date32(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
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

/// One ledger line.
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

impl Entry {
    /// The `spend_ledger` row.
    fn row(&self) -> [V; 10] {
        [
            V::I(self.id),
            V::D(date32(self.posted)),
            V::Str(self.service_month.clone()),
            V::OptI(self.program_id),
            V::S(self.cost_center),
            V::S(self.vendor),
            V::Str(self.invoice_id.clone()),
            V::S(self.currency),
            V::M(self.amount),
            V::S(self.entry_type),
        ]
    }
}

/// What the entries booked for one service month and payee share.
struct Booking<'a> {
    month: &'a str,
    program_id: Option<i64>,
    cost_center: &'static str,
    vendor: &'static str,
    currency: &'static str,
}

impl Booking<'_> {
    fn entry(
        &self,
        posted: NaiveDate,
        invoice_id: String,
        amount: i128,
        entry_type: &'static str,
    ) -> Entry {
        Entry {
            id: 0,
            posted,
            service_month: self.month.to_string(),
            program_id: self.program_id,
            cost_center: self.cost_center,
            vendor: self.vendor,
            invoice_id,
            currency: self.currency,
            amount,
            entry_type,
        }
    }
}

/// The ledger being booked: entries are numbered from 1 in booking order.
#[derive(Default)]
struct Ledger(Vec<Entry>);

impl Ledger {
    fn book(&mut self, mut entry: Entry) {
        entry.id = self.0.len() as i64 + 1;
        self.0.push(entry);
    }
}

/// One `budget_plan` line, in the program's currency.
struct PlanLine {
    month: String,
    program_id: i64,
    cost_center: &'static str,
    currency: &'static str,
    amount: i128,
    version: i32,
}

impl PlanLine {
    /// The `budget_plan` row.
    fn row(&self) -> [V; 6] {
        [
            V::Str(self.month.clone()),
            V::I(self.program_id),
            V::S(self.cost_center),
            V::S(self.currency),
            V::M(self.amount),
            V::I32(self.version),
        ]
    }
}

/// Write `budget_plan`, `fx_rates` and `spend_ledger` through `raw`; returns the truth.
pub(super) async fn generate(
    raw: &mut RawWriter,
    opts: &GenerateOptions,
    spend: &MonthlySpend,
    program_ids: &[i64],
) -> Result<FinanceTruth> {
    let months: Vec<String> = (0..opts.months)
        .map(|m| month_key(opts.start + chrono::Months::new(m)))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xF1_4A_4C_E5);
    let missing = months[months.len() / 2].clone();
    let rates = fx_rates(&mut rng, &months, &missing);
    let entries = ledger(&mut rng, &months, &rates, spend, &missing);
    let entries = split_lines(entries, opts.ledger_lines.max(1));
    let plan = plan(&mut rng, &months, &rates, spend, &missing);
    let mut truth = FinanceTruth {
        reporting_currency: "USD".into(),
        missing_rate: missing,
        ..Default::default()
    };
    reconcile(&mut truth, &entries, &plan, &rates, program_ids);
    write(raw, &rates, &plan, &entries).await?;
    Ok(truth)
}

/// FX: a small random walk per currency; the `missing` month's SEK rate is left out on purpose.
fn fx_rates(rng: &mut ChaCha8Rng, months: &[String], missing: &str) -> Rates {
    let mut rates = Rates::new();
    let mut level: BTreeMap<&str, i128> = CURRENCIES.iter().copied().collect();
    for m in months {
        for (c, _) in CURRENCIES {
            if c != "USD" {
                let step = rng.random_range(-150_000i128..=150_000);
                *level.get_mut(c).expect("currency") += step;
            }
            if !(c == "SEK" && m == missing) {
                rates.insert((m.clone(), c), level[c]);
            }
        }
    }
    rates
}

/// The ledger: every program's monthly spend, invoiced in its vendor's currency, then the
/// entries that cannot be mapped; entries posted after the last month are not in the data yet.
fn ledger(
    rng: &mut ChaCha8Rng,
    months: &[String],
    rates: &Rates,
    spend: &MonthlySpend,
    missing: &str,
) -> Vec<Entry> {
    let mut ledger = Ledger::default();
    for (pi, &(program_id, cost_center, vendor, currency)) in BILLING.iter().enumerate() {
        for m in months {
            let Some(&reporting) = spend.get(&(pi, m.clone())) else {
                continue;
            };
            if reporting == 0 {
                continue;
            }
            let booking = Booking {
                month: m,
                program_id: Some(program_id),
                cost_center,
                vendor,
                currency,
            };
            let invoice = to_local(reporting, rates[&(m.clone(), currency)]);
            book_program_month(&mut ledger, rng, &booking, invoice);
        }
    }
    book_unmapped(&mut ledger, rng, months, missing);
    let last = last_of(months.last().expect("months"));
    let mut entries = ledger.0;
    entries.retain(|e| e.posted <= last);
    entries
}

/// One program month: accrue an estimate at month end, reverse it next month, book the invoice
/// (8% post late: two to three months after their service month) and for 10% a credit note.
fn book_program_month(ledger: &mut Ledger, rng: &mut ChaCha8Rng, b: &Booking, invoice: i128) {
    let (m, program_id) = (b.month, b.program_id.expect("program"));
    let month_end = last_of(m);
    let next = month_end + Duration::days(1);
    let invoice_id = format!("INV-{program_id}-{m}");
    let accrual_id = format!("ACR-{program_id}-{m}");
    let estimate = invoice * rng.random_range(90..=110) / 100;
    ledger.book(b.entry(month_end, accrual_id.clone(), estimate, "accrual"));
    ledger.book(b.entry(next, accrual_id, -estimate, "reversal"));
    let posted = if rng.random_bool(0.08) {
        next + chrono::Months::new(rng.random_range(1..=2))
            + Duration::days(rng.random_range(0..20))
    } else {
        next + Duration::days(rng.random_range(4..25))
    };
    ledger.book(b.entry(posted, invoice_id.clone(), invoice, "invoice"));
    if rng.random_bool(0.10) {
        let credit = -(invoice * 5 / 100).max(1);
        let at = posted + Duration::days(rng.random_range(3..15));
        ledger.book(b.entry(at, format!("CN-{invoice_id}"), credit, "credit_note"));
    }
}

/// Entries that cannot be mapped: no program, an unknown program, a currency the plan does not
/// have for the program, and SEK in the month without a SEK rate.
fn book_unmapped(ledger: &mut Ledger, rng: &mut ChaCha8Rng, months: &[String], missing: &str) {
    for (i, m) in months.iter().enumerate() {
        let posted = first_of(m) + Duration::days(rng.random_range(0..27));
        let amount = rng.random_range(1_000i128..50_000);
        let payee = |program_id, cost_center, vendor, currency| Booking {
            month: m,
            program_id,
            cost_center,
            vendor,
            currency,
        };
        let misc = payee(None, "CC-OPS", "Misc", "USD");
        ledger.book(misc.entry(posted, format!("MISC-{m}"), amount, "invoice"));
        if i % 3 == 0 {
            let unknown = payee(Some(99), "CC-GROWTH", "Unknown Ltd", "EUR");
            ledger.book(unknown.entry(posted, format!("UNK-{m}"), amount / 2, "invoice"));
        }
        if i % 4 == 1 {
            let gbp = payee(Some(2), "CC-GROWTH", "MailCo UK", "GBP");
            ledger.book(gbp.entry(posted, format!("GBP-{m}"), amount / 3, "invoice"));
        }
        if m == missing || i % 5 == 2 {
            let sek = payee(Some(4), "CC-TRUST", "NordicAds", "SEK");
            ledger.book(sek.entry(posted, format!("SEK-{m}"), amount * 10, "invoice"));
        }
    }
}

/// Volume: book every entry as `lines_per_entry` lines that add up to it (the first line takes
/// the remainder), numbered anew; each line is converted and rounded on its own.
fn split_lines(entries: Vec<Entry>, lines_per_entry: usize) -> Vec<Entry> {
    if lines_per_entry <= 1 {
        return entries;
    }
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
    lines
}

/// The plan: per month, program, cost center, in the program's currency; SEK lines for the
/// NordicAds spend; version 2 revises a third of the months; one line for an unknown program.
fn plan(
    rng: &mut ChaCha8Rng,
    months: &[String],
    rates: &Rates,
    spend: &MonthlySpend,
    missing: &str,
) -> Vec<PlanLine> {
    let mut plan = Vec::new();
    for (pi, &(program_id, cost_center, _, currency)) in BILLING.iter().enumerate() {
        for (i, m) in months.iter().enumerate() {
            let reporting = spend.get(&(pi, m.clone())).copied().unwrap_or(0);
            if reporting == 0 {
                continue;
            }
            let base = to_local(reporting, rates[&(m.clone(), currency)]);
            let planned = base * rng.random_range(85..=115) / 100;
            let line = |amount, version| PlanLine {
                month: m.clone(),
                program_id,
                cost_center,
                currency,
                amount,
                version,
            };
            plan.push(line(planned, 1));
            if i % 3 == 0 {
                plan.push(line(planned * rng.random_range(95..=105) / 100, 2));
            }
        }
    }
    let line = |month: &String, program_id, cost_center, currency, amount| PlanLine {
        month: month.clone(),
        program_id,
        cost_center,
        currency,
        amount,
        version: 1,
    };
    for (i, m) in months.iter().enumerate() {
        if m == missing || i % 5 == 2 {
            plan.push(line(m, 4, "CC-TRUST", "SEK", 2_000_000));
        }
    }
    plan.push(line(&months[0], 77, "CC-GROWTH", "USD", 100_000));
    plan
}

/// (month, program, cost center, currency) of a plan line.
type PlanKey = (String, i64, &'static str, &'static str);

/// The expected figures: entries by type, exceptions by reason, and actual and planned amounts
/// in reporting currency per month, program and cost center.
fn reconcile(
    truth: &mut FinanceTruth,
    entries: &[Entry],
    plan: &[PlanLine],
    rates: &Rates,
    known: &[i64],
) {
    // The latest version of each plan line.
    let mut latest: BTreeMap<PlanKey, (i32, i128)> = BTreeMap::new();
    for p in plan {
        let key = (p.month.clone(), p.program_id, p.cost_center, p.currency);
        let e = latest.entry(key).or_insert((p.version, p.amount));
        if p.version > e.0 {
            *e = (p.version, p.amount);
        }
    }
    let mut actual: BTreeMap<String, i128> = BTreeMap::new();
    for e in entries {
        bump(&mut truth.entries, e.entry_type);
        match exception(e, known, rates, &latest) {
            Some(reason) => bump(&mut truth.exceptions, reason),
            None => {
                let program = e.program_id.expect("mapped");
                let key = format!("{}/{program}/{}", e.service_month, e.cost_center);
                let rate = rates[&(e.service_month.clone(), e.currency)];
                *actual.entry(key).or_default() += to_reporting(e.amount, rate);
            }
        }
    }
    let mut planned: BTreeMap<String, i128> = BTreeMap::new();
    for ((m, p, cc, cur), (_, amount)) in &latest {
        match (known.contains(p), rates.get(&(m.clone(), *cur))) {
            (true, Some(rate)) => {
                *planned.entry(format!("{m}/{p}/{cc}")).or_default() += to_reporting(*amount, *rate)
            }
            (true, None) => bump(&mut truth.exceptions, "plan_missing_fx_rate"),
            (false, _) => bump(&mut truth.exceptions, "plan_for_unknown_program"),
        }
    }
    let text = |m: BTreeMap<String, i128>| m.into_iter().map(|(k, v)| (k, cents_text(v))).collect();
    truth.actual = text(actual);
    truth.planned = text(planned);
}

fn bump(counts: &mut BTreeMap<String, u64>, key: &str) {
    *counts.entry(key.into()).or_default() += 1;
}

/// Why a ledger entry cannot be reconciled, if it cannot.
fn exception(
    e: &Entry,
    known: &[i64],
    rates: &Rates,
    latest: &BTreeMap<PlanKey, (i32, i128)>,
) -> Option<&'static str> {
    let month = e.service_month.clone();
    match e.program_id {
        None => Some("unknown_program"),
        Some(p) if !known.contains(&p) => Some("unknown_program"),
        Some(_) if !rates.contains_key(&(month.clone(), e.currency)) => Some("missing_fx_rate"),
        Some(p) if !latest.contains_key(&(month, p, e.cost_center, e.currency)) => {
            Some("currency_not_in_plan")
        }
        Some(_) => None,
    }
}

/// Write fx_rates and budget_plan as single files, the ledger by posting day.
async fn write(
    raw: &mut RawWriter,
    rates: &Rates,
    plan: &[PlanLine],
    entries: &[Entry],
) -> Result<()> {
    let fx = rates
        .iter()
        .map(|((month, currency), rate)| [V::Str(month.clone()), V::S(currency), V::M(*rate)]);
    raw.write_file("fx_rates", None, Rows::of(fx_schema(), fx))
        .await?;
    let plan = Rows::of(plan_schema(), plan.iter().map(PlanLine::row));
    raw.write_file("budget_plan", None, plan).await?;
    let mut by_day: BTreeMap<NaiveDate, Rows> = BTreeMap::new();
    let schema = ledger_schema();
    for e in entries {
        by_day
            .entry(e.posted)
            .or_insert_with(|| Rows::new(schema.clone()))
            .push(e.row());
    }
    for (day, rows) in by_day {
        raw.write_file("spend_ledger", Some(day), rows).await?;
    }
    raw.counts.entry("spend_ledger".into()).or_insert(0);
    Ok(())
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
