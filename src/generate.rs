//! `retention generate`: a deterministic synthetic marketplace with planted effects. Customers
//! arrive over time and order again with a probability that bad experiences lower, recovery
//! vouchers partly restore and retention programs raise; every effect and control total is written
//! to `truth.json` beside the sources. Simulated day by day: only the customers' small state and
//! the events of the coming weeks are in memory, each day's rows are written as they close.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use url::Url;

use crate::error::{Error, Result};
use crate::storage::Stores;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub seed: u64,
    /// Customers who sign up over the period.
    pub customers: u64,
    pub months: u32,
    pub start: NaiveDate,
    /// Ledger lines per booked entry (volume for finance benchmarks and tests; default 1).
    pub ledger_lines: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            seed: 42,
            customers: 20_000,
            months: 24,
            start: NaiveDate::from_ymd_opt(2024, 11, 1).expect("valid date"),
            ledger_lines: 1,
        }
    }
}

/// Row counts written per table, and the planted truth.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Generated {
    pub tables: BTreeMap<String, u64>,
    pub truth: Truth,
}

// ---------------------------------------------------------------------------------------------
// The planted model. Every number here is written to truth.json.
// ---------------------------------------------------------------------------------------------

/// Acquisition channels with their share of sign-ups, chance of ordering again after an order
/// without issues, and mean days until that next order.
pub const CHANNELS: [(&str, f64, f64, f64); 4] = [
    ("organic", 0.35, 0.62, 30.0),
    ("search", 0.30, 0.55, 35.0),
    ("social", 0.20, 0.42, 40.0),
    ("referral", 0.15, 0.68, 28.0),
];
pub const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
const CATEGORIES: [&str; 6] = [
    "fashion",
    "electronics",
    "home",
    "beauty",
    "grocery",
    "toys",
];
/// Carriers with their chance of a late and of a lost parcel.
pub const CARRIERS: [(&str, f64, f64); 3] = [
    ("swiftship", 0.05, 0.004),
    ("parcelco", 0.08, 0.008),
    ("roadrunner", 0.13, 0.015),
];
const TRAFFIC: [(&str, f64); 5] = [
    ("search", 0.35),
    ("feed", 0.25),
    ("live", 0.10),
    ("ads", 0.20),
    ("affiliate", 0.10),
];
/// Chance of each bad experience besides delivery (which depends on the carrier), in priority
/// order after `lost_parcel` and before `late_delivery` for returns and refunds.
const ISSUE_RATES: [(Issue, f64); 4] = [
    (Issue::Returned, 0.05),
    (Issue::Refunded, 0.03),
    (Issue::SupportContact, 0.05),
    (Issue::LowRating, 0.03),
];
/// Share of customers who never order after signing up.
const NEVER_ORDER: f64 = 0.12;
const CANCEL_RATE: f64 = 0.03;
/// Share of bad experiences the recovery program compensates with a voucher within 7 days.
pub const VOUCHER_RATE: f64 = 0.5;
/// Share of the lost return probability a recovery voucher restores.
pub const VOUCHER_RESTORE: f64 = 0.5;

/// A bad experience, as `order_experience.primary_issue` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Issue {
    LostParcel,
    Returned,
    Refunded,
    LateDelivery,
    SupportContact,
    LowRating,
    None,
}

impl Issue {
    pub fn name(self) -> &'static str {
        match self {
            Issue::LostParcel => "lost_parcel",
            Issue::Returned => "returned",
            Issue::Refunded => "refunded",
            Issue::LateDelivery => "late_delivery",
            Issue::SupportContact => "support_contact",
            Issue::LowRating => "low_rating",
            Issue::None => "none",
        }
    }

    /// Multiplier on the chance of ordering again.
    pub fn return_multiplier(self) -> f64 {
        match self {
            Issue::LostParcel => 0.45,
            Issue::Returned => 0.75,
            Issue::Refunded => 0.65,
            Issue::LateDelivery => 0.80,
            Issue::SupportContact => 0.88,
            Issue::LowRating => 0.55,
            Issue::None => 1.0,
        }
    }

    pub const ALL: [Issue; 7] = [
        Issue::LostParcel,
        Issue::Returned,
        Issue::Refunded,
        Issue::LateDelivery,
        Issue::SupportContact,
        Issue::LowRating,
        Issue::None,
    ];
}

/// A marketing program.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProgramTruth {
    pub program_id: i64,
    pub name: String,
    pub kind: String,
    /// First and last month (0-based from the start) the program runs.
    pub first_month: u32,
    pub last_month: u32,
    pub holdout_share: f64,
    /// Chance a customer who orders while the program runs is targeted (treated or holdout).
    pub target_rate: f64,
    /// Absolute increase of the chance of ordering again for treated customers.
    pub uplift: f64,
    /// Voucher each treated customer gets, in cents (0: none).
    pub voucher_cents: i64,
    /// Exact totals written: marketing spend (decimal text), touches, vouchers.
    pub marketing_spend: String,
    pub treated: u64,
    pub holdout: u64,
    pub vouchers_issued: u64,
    pub voucher_value_issued: String,
    pub voucher_value_redeemed: String,
}

fn programs(months: u32) -> Vec<ProgramTruth> {
    let p =
        |id, name: &str, kind: &str, first, last, holdout, target, uplift, voucher| ProgramTruth {
            program_id: id,
            name: name.into(),
            kind: kind.into(),
            first_month: first,
            last_month: last,
            holdout_share: holdout,
            target_rate: target,
            uplift,
            voucher_cents: voucher,
            marketing_spend: String::new(),
            treated: 0,
            holdout: 0,
            vouchers_issued: 0,
            voucher_value_issued: String::new(),
            voucher_value_redeemed: String::new(),
        };
    let last = months.saturating_sub(1);
    vec![
        p(
            1,
            "Service recovery vouchers",
            "recovery",
            0,
            last,
            0.0,
            0.0,
            0.0,
            0,
        ),
        p(
            2,
            "Win-back email",
            "retention",
            months / 4,
            months * 3 / 4,
            0.2,
            0.30,
            0.20,
            0,
        ),
        p(
            3,
            "Loyalty points boost",
            "retention",
            months / 2,
            last,
            0.1,
            0.25,
            0.06,
            500,
        ),
        p(
            4,
            "Buyer protection campaign",
            "trust_campaign",
            months / 8,
            months / 2,
            0.5,
            0.20,
            0.0,
            0,
        ),
    ]
}

/// Everything `generate` planted, written to `truth.json` at the raw root.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Truth {
    pub seed: u64,
    pub customers: u64,
    pub start: String,
    /// Last day with data.
    pub end: String,
    /// Chance of ordering again after an order with no issue, and mean gap days, by channel.
    pub base_return_probability: BTreeMap<String, f64>,
    pub mean_gap_days: BTreeMap<String, f64>,
    /// Planted multiplier of each primary issue on the chance of ordering again.
    pub issue_return_multiplier: BTreeMap<String, f64>,
    pub voucher_rate: f64,
    pub voucher_restore_share: f64,
    pub programs: Vec<ProgramTruth>,
    /// Per channel: customers active k months after their first order (k = index), and customers
    /// whose cohort had reached month k by the end of the data. Exact tallies.
    pub retention_active: BTreeMap<String, Vec<u64>>,
    pub retention_eligible: BTreeMap<String, Vec<u64>>,
    /// Completed orders placed at least `SETTLED_DAYS` before the end (so every consequence is
    /// in the data), by primary issue. Exact tallies.
    pub orders_by_issue: BTreeMap<String, u64>,
    /// Completed first orders placed at least `OBSERVED_DAYS` before the end, by primary issue
    /// (`none` = perfect): how many, and the mean chance of ordering again the model used for
    /// them (vouchers and programs included). Ratios of these means are the lifts the marts
    /// should find.
    pub first_order_groups: BTreeMap<String, Group>,
    /// Bad-experience orders placed at least `OBSERVED_DAYS + SETTLED_DAYS` before the end, by
    /// `issue/compensated` and `issue/uncompensated`.
    pub recovery_groups: BTreeMap<String, Group>,
    /// Program touches at least `OBSERVED_DAYS + SETTLED_DAYS` before the end, by
    /// `program_id/treated` and `program_id/holdout`.
    pub program_groups: BTreeMap<String, Group>,
    /// Sum of gmv over all orders, and of refunds: exact decimal text.
    pub gmv_total: String,
    pub refund_total: String,
    /// The finance tables' expected reconciliation.
    pub finance: crate::finance_data::FinanceTruth,
}

/// Cases of one kind and the mean planted chance of ordering again among them.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Group {
    pub cases: u64,
    pub mean_return_probability: f64,
    #[serde(skip)]
    sum_p: f64,
}

impl Group {
    fn add(&mut self, p: f64) {
        self.cases += 1;
        self.sum_p += p;
        self.mean_return_probability = self.sum_p / self.cases as f64;
    }
}

/// Days before the end an order must be placed for all its consequences to be in the data.
pub const SETTLED_DAYS: i64 = 30;
/// Days of observation the truth groups need (the marts' longest repurchase window).
pub const OBSERVED_DAYS: i64 = 90;

// ---------------------------------------------------------------------------------------------
// Schemas.
// ---------------------------------------------------------------------------------------------

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}
fn money() -> DataType {
    DataType::Decimal128(18, 2)
}
fn f(name: &str, t: DataType, nullable: bool) -> Field {
    Field::new(name, t, nullable)
}

/// Arrow schema of every generated table (data columns; `dt` is the Hive directory).
pub fn schema(table: &str) -> SchemaRef {
    use DataType::*;
    let fields = match table {
        "customers" => vec![
            f("customer_id", Int64, false),
            f("signup_ts", ts(), false),
            f("region", Utf8, false),
            f("acquisition_channel", Utf8, false),
        ],
        "sessions" => vec![
            f("session_id", Int64, false),
            f("customer_id", Int64, true),
            f("session_ts", ts(), false),
            f("traffic_source", Utf8, false),
            f("converted_order_id", Int64, true),
        ],
        "orders" => vec![
            f("order_id", Int64, false),
            f("customer_id", Int64, false),
            f("order_ts", ts(), false),
            f("region", Utf8, false),
            f("category", Utf8, false),
            f("gmv", money(), false),
            f("discount", money(), false),
            f("shipping_fee", money(), false),
            f("voucher_id", Int64, true),
            f("status", Utf8, false),
        ],
        "shipments" => vec![
            f("order_id", Int64, false),
            f("carrier", Utf8, false),
            f("shipped_ts", ts(), false),
            f("promised_ts", ts(), false),
            f("delivered_ts", ts(), true),
            f("status", Utf8, false),
        ],
        "refunds" => vec![
            f("refund_id", Int64, false),
            f("order_id", Int64, false),
            f("refund_ts", ts(), false),
            f("amount", money(), false),
            f("reason", Utf8, false),
        ],
        "returns" => vec![
            f("return_id", Int64, false),
            f("order_id", Int64, false),
            f("requested_ts", ts(), false),
            f("received_ts", ts(), true),
            f("reason", Utf8, false),
            f("status", Utf8, false),
        ],
        "cs_tickets" => vec![
            f("ticket_id", Int64, false),
            f("customer_id", Int64, false),
            f("order_id", Int64, true),
            f("created_ts", ts(), false),
            f("resolved_ts", ts(), true),
            f("category", Utf8, false),
            f("csat", Int32, true),
        ],
        "reviews" => vec![
            f("order_id", Int64, false),
            f("customer_id", Int64, false),
            f("review_ts", ts(), false),
            f("rating", Int32, false),
        ],
        "programs" => vec![
            f("program_id", Int64, false),
            f("name", Utf8, false),
            f("kind", Utf8, false),
            f("start_date", Date32, false),
            f("end_date", Date32, false),
            f("holdout_share", DataType::Decimal128(5, 4), false),
        ],
        "touches" => vec![
            f("customer_id", Int64, false),
            f("program_id", Int64, false),
            f("touch_ts", ts(), false),
            f("is_holdout", Boolean, false),
        ],
        "vouchers" => vec![
            f("voucher_id", Int64, false),
            f("customer_id", Int64, false),
            f("program_id", Int64, false),
            f("issued_ts", ts(), false),
            f("reason", Utf8, false),
            f("face_value", money(), false),
            f("expires_ts", ts(), false),
            f("redeemed_order_id", Int64, true),
        ],
        "marketing_spend" => vec![
            f("spend_id", Int64, false),
            f("program_id", Int64, false),
            f("channel", Utf8, false),
            f("spend_date", Date32, false),
            f("amount", money(), false),
        ],
        other => panic!("no schema for table {other}"),
    };
    Arc::new(Schema::new(fields))
}

/// Tables partitioned by day (`dt=YYYY-MM-DD/`).
pub const EVENT_TABLES: [&str; 10] = [
    "sessions",
    "orders",
    "shipments",
    "refunds",
    "returns",
    "cs_tickets",
    "reviews",
    "touches",
    "vouchers",
    "marketing_spend",
];

// ---------------------------------------------------------------------------------------------
// Column buffers.
// ---------------------------------------------------------------------------------------------

/// One value of a generated row.
#[derive(Debug, Clone)]
enum V {
    I(i64),
    OptI(Option<i64>),
    I32(i32),
    OptI32(Option<i32>),
    S(&'static str),
    Str(String),
    T(i64),
    OptT(Option<i64>),
    M(i128),
    D(i32),
    B(bool),
}

/// Rows of one table, to become one Parquet file.
#[derive(Debug, Default)]
struct Rows(Vec<Vec<V>>);

impl Rows {
    fn to_batch(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (c, field) in schema.fields().iter().enumerate() {
            let col = self.0.iter().map(|r| &r[c]);
            let array: ArrayRef = match field.data_type() {
                DataType::Int64 => Arc::new(Int64Array::from(
                    col.map(|v| match v {
                        V::I(x) => Some(*x),
                        V::OptI(x) => *x,
                        _ => unreachable!("int64 column"),
                    })
                    .collect::<Vec<_>>(),
                )),
                DataType::Int32 => Arc::new(Int32Array::from(
                    col.map(|v| match v {
                        V::I32(x) => Some(*x),
                        V::OptI32(x) => *x,
                        _ => unreachable!("int32 column"),
                    })
                    .collect::<Vec<_>>(),
                )),
                DataType::Utf8 => Arc::new(StringArray::from(
                    col.map(|v| match v {
                        V::S(s) => s,
                        V::Str(s) => s.as_str(),
                        _ => unreachable!("string column"),
                    })
                    .collect::<Vec<_>>(),
                )),
                DataType::Timestamp(_, _) => Arc::new(
                    TimestampMicrosecondArray::from(
                        col.map(|v| match v {
                            V::T(x) => Some(*x),
                            V::OptT(x) => *x,
                            _ => unreachable!("timestamp column"),
                        })
                        .collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                DataType::Decimal128(p, s) => Arc::new(
                    Decimal128Array::from(
                        col.map(|v| match v {
                            V::M(x) => *x,
                            _ => unreachable!("decimal column"),
                        })
                        .collect::<Vec<_>>(),
                    )
                    .with_precision_and_scale(*p, *s)
                    .map_err(|e| Error::DataFusion(e.to_string()))?,
                ),
                DataType::Date32 => Arc::new(Date32Array::from(
                    col.map(|v| match v {
                        V::D(x) => *x,
                        _ => unreachable!("date column"),
                    })
                    .collect::<Vec<_>>(),
                )),
                DataType::Boolean => Arc::new(BooleanArray::from(
                    col.map(|v| match v {
                        V::B(x) => *x,
                        _ => unreachable!("boolean column"),
                    })
                    .collect::<Vec<_>>(),
                )),
                other => unreachable!("generated type {other}"),
            };
            columns.push(array);
        }
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::DataFusion(e.to_string()))
    }
}

/// Encode batches as one zstd Parquet file.
pub fn parquet_bytes(schema: SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(crate::curated::writer_properties()))
        .map_err(|e| Error::DataFusion(e.to_string()))?;
    for b in batches {
        w.write(b).map_err(|e| Error::DataFusion(e.to_string()))?;
    }
    w.close().map_err(|e| Error::DataFusion(e.to_string()))?;
    Ok(buf)
}

/// Put one object; the store's own put is atomic, so a reader never sees half a file.
pub async fn put(
    store: &Arc<dyn ObjectStore>,
    path: &StorePath,
    bytes: Vec<u8>,
    location: &Url,
) -> Result<()> {
    store
        .put(path, PutPayload::from(bytes))
        .await
        .map_err(|e| Error::Storage {
            location: location.to_string(),
            message: crate::storage::redact(&e.to_string()),
        })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The simulation.
// ---------------------------------------------------------------------------------------------

const MICROS_PER_DAY: i64 = 86_400_000_000;
const MICROS_PER_HOUR: i64 = 3_600_000_000;

fn day_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_DAY)
}

fn date_of_day(day: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + Duration::days(day)
}

fn months_between(a_day: i64, b_day: i64) -> i64 {
    let (a, b) = (date_of_day(a_day), date_of_day(b_day));
    (b.year() as i64 - a.year() as i64) * 12 + b.month() as i64 - a.month() as i64
}

/// Season and weekday weight of a day (peak in November and December, busier weekends).
fn day_weight(day: i64) -> f64 {
    let d = date_of_day(day);
    let season = if matches!(d.month(), 11 | 12) {
        1.3
    } else {
        1.0
    };
    let weekend = if d.weekday().number_from_monday() >= 6 {
        1.15
    } else {
        1.0
    };
    season * weekend
}
const MAX_DAY_WEIGHT: f64 = 1.3 * 1.15;

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, f64)]) -> T {
    let mut u: f64 = rng.random();
    for (item, w) in items {
        if u < *w {
            return *item;
        }
        u -= w;
    }
    items[items.len() - 1].0
}

fn uniform_micros(rng: &mut ChaCha8Rng, lo_hours: f64, hi_hours: f64) -> i64 {
    (rng.random_range(lo_hours..hi_hours) * MICROS_PER_HOUR as f64) as i64
}

/// A customer's small state between orders.
#[derive(Debug, Clone)]
struct Customer {
    id: i64,
    channel: usize,
    region: usize,
    first_order_day: Option<i64>,
    /// Months (since first order) with an order, as a bit set (k < 128).
    active_months: u128,
    /// Voucher the next order redeems: (voucher id, face cents).
    redeem: Option<(i64, i128)>,
}

/// A voucher to issue once the customer's next order time is known.
struct PlannedVoucher {
    program: usize,
    at: i64,
    face: i128,
    reason: &'static str,
}

/// Rows waiting for their day to close.
#[derive(Default)]
struct Day {
    tables: BTreeMap<&'static str, Rows>,
}

struct Sim<'a> {
    rng: ChaCha8Rng,
    end_micros: i64,
    last_day: i64,
    pending: BTreeMap<i64, Day>,
    /// The first day not yet written.
    open_day: i64,
    next_id: BTreeMap<&'static str, i64>,
    programs: Vec<ProgramTruth>,
    program_days: Vec<(i64, i64)>,
    truth: &'a mut Truth,
    voucher_issued: Vec<i128>,
    voucher_redeemed: Vec<i128>,
    spend: Vec<i128>,
    /// Per program index and month: marketing spend, and for recovery the redeemed vouchers.
    spend_by_month: crate::finance_data::MonthlySpend,
    gmv_total: i128,
    refund_total: i128,
}

impl Sim<'_> {
    fn id(&mut self, table: &'static str) -> i64 {
        let n = self.next_id.entry(table).or_insert(0);
        *n += 1;
        *n
    }

    /// Queue a row for the day of `at` (or the first open day, when it arrives late); 2% of
    /// delivery, refund and ticket events land one to three days late on purpose.
    fn emit(&mut self, table: &'static str, at: i64, row: Vec<V>) {
        if at >= self.end_micros {
            return;
        }
        let mut day = day_of(at).max(self.open_day);
        if matches!(table, "shipments" | "refunds" | "cs_tickets") && self.rng.random_bool(0.02) {
            day += self.rng.random_range(1..=3);
        }
        let day = day.min(self.last_day);
        self.pending
            .entry(day)
            .or_default()
            .tables
            .entry(table)
            .or_default()
            .0
            .push(row);
    }

    /// Place order `order_id` for `c` at `t` with everything that follows it. Returns the chance
    /// the customer orders again, when the order's outcome was felt (the next order, if any, comes
    /// after it), and the vouchers the order earns.
    fn order(
        &mut self,
        c: &mut Customer,
        t: i64,
        order_id: i64,
    ) -> (f64, i64, Vec<PlannedVoucher>) {
        let mut vouchers = Vec::new();
        let (_, _, base, _) = CHANNELS[c.channel];
        let order_day = day_of(t);
        let cancelled = self.rng.random_bool(CANCEL_RATE);
        let is_first_completed = !cancelled && c.first_order_day.is_none();
        if !cancelled {
            // Cohorts and activity count completed orders only, as the marts do.
            let first_day = *c.first_order_day.get_or_insert(order_day);
            let k = months_between(first_day, order_day);
            if (0..128).contains(&k) {
                c.active_months |= 1u128 << k;
            }
        }
        // Basket: log-normal, median about 35.00, heavy right tail.
        let z: f64 = (0..6).map(|_| self.rng.random::<f64>()).sum::<f64>() - 3.0;
        let gmv = ((35.0 * (0.8 * z).exp()).max(1.0) * 100.0).round() as i128;
        let fee: i128 = if gmv >= 4000 { 0 } else { 399 };
        let (mut discount, mut voucher_id) = (0i128, None);
        if let Some((vid, face)) = c.redeem.take() {
            discount = face.min(gmv);
            voucher_id = Some(vid);
        }
        let category = CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
        self.gmv_total += gmv;
        self.emit(
            "orders",
            t,
            vec![
                V::I(order_id),
                V::I(c.id),
                V::T(t),
                V::S(REGIONS[c.region]),
                V::S(category),
                V::M(gmv),
                V::M(discount),
                V::M(fee),
                V::OptI(voucher_id),
                V::S(if cancelled { "cancelled" } else { "completed" }),
            ],
        );
        // The session that converted, and a couple that did not.
        let source = pick(&mut self.rng, &TRAFFIC);
        let sid = self.id("sessions");
        let session_ts = t - uniform_micros(&mut self.rng, 0.02, 1.0);
        self.emit(
            "sessions",
            session_ts,
            vec![
                V::I(sid),
                V::OptI(Some(c.id)),
                V::T(session_ts),
                V::S(source),
                V::OptI(Some(order_id)),
            ],
        );
        let browsing = self.rng.random_range(0..4);
        for _ in 0..browsing {
            let sid = self.id("sessions");
            let source = pick(&mut self.rng, &TRAFFIC);
            let anonymous = self.rng.random_bool(0.3);
            let at = t - uniform_micros(&mut self.rng, 0.0, 20.0);
            self.emit(
                "sessions",
                at,
                vec![
                    V::I(sid),
                    V::OptI((!anonymous).then_some(c.id)),
                    V::T(at),
                    V::S(source),
                    V::OptI(None),
                ],
            );
        }
        if cancelled {
            return (base, t, vouchers);
        }

        // Delivery.
        let carrier = self.rng.random_range(0..CARRIERS.len());
        let (carrier_name, late_rate, lost_rate) = CARRIERS[carrier];
        let shipped = t + uniform_micros(&mut self.rng, 2.0, 36.0);
        let promised = shipped + 3 * MICROS_PER_DAY;
        let u: f64 = self.rng.random();
        let mut issue = if u < lost_rate {
            Issue::LostParcel
        } else if u < lost_rate + late_rate {
            Issue::LateDelivery
        } else {
            Issue::None
        };
        let delivered = match issue {
            Issue::LostParcel => None,
            Issue::LateDelivery => Some(promised + uniform_micros(&mut self.rng, 6.0, 24.0 * 7.0)),
            _ => Some(shipped + uniform_micros(&mut self.rng, 20.0, 70.0)),
        };
        self.emit(
            "shipments",
            shipped,
            vec![
                V::I(order_id),
                V::S(carrier_name),
                V::T(shipped),
                V::T(promised),
                V::OptT(delivered),
                V::S(if delivered.is_some() {
                    "delivered"
                } else {
                    "lost"
                }),
            ],
        );
        // Other issues, only on orders delivered on time (exclusive, so the primary issue is the
        // one drawn; priority order lost > returned > refunded > late > contact > low rating).
        if issue == Issue::None {
            let mut u: f64 = self.rng.random();
            for (candidate, rate) in ISSUE_RATES {
                if u < rate {
                    issue = candidate;
                    break;
                }
                u -= rate;
            }
        }
        let net = gmv - discount;
        let arrived = delivered.unwrap_or(promised);
        // When the customer felt the issue (a voucher may follow within 7 days of it).
        let felt = match issue {
            Issue::LostParcel => {
                let at = promised + uniform_micros(&mut self.rng, 24.0, 120.0);
                self.refund(order_id, at, net, "lost_parcel");
                if self.rng.random_bool(0.7) {
                    let at = promised + uniform_micros(&mut self.rng, 1.0, 48.0);
                    self.ticket(c.id, Some(order_id), at, "delivery");
                }
                promised
            }
            Issue::LateDelivery => {
                if self.rng.random_bool(0.3) {
                    let at = promised + uniform_micros(&mut self.rng, 1.0, 100.0);
                    self.ticket(c.id, Some(order_id), at, "delivery");
                }
                promised
            }
            Issue::Returned => {
                let requested = arrived + uniform_micros(&mut self.rng, 24.0, 24.0 * 14.0);
                let received = requested + uniform_micros(&mut self.rng, 48.0, 24.0 * 7.0);
                let rid = self.id("returns");
                self.emit(
                    "returns",
                    requested,
                    vec![
                        V::I(rid),
                        V::I(order_id),
                        V::T(requested),
                        V::OptT(Some(received)),
                        V::S("changed_mind"),
                        V::S("received"),
                    ],
                );
                let at = received + uniform_micros(&mut self.rng, 2.0, 48.0);
                self.refund(order_id, at, net, "return");
                requested
            }
            Issue::Refunded => {
                let at = arrived + uniform_micros(&mut self.rng, 24.0, 24.0 * 10.0);
                let share = self.rng.random_range(0.2..1.0);
                let amount = ((net as f64) * share).round() as i128;
                let reason = if self.rng.random_bool(0.5) {
                    "damaged"
                } else {
                    "missing_item"
                };
                self.refund(order_id, at, amount.max(1), reason);
                at
            }
            Issue::SupportContact => {
                let at = arrived + uniform_micros(&mut self.rng, 1.0, 24.0 * 10.0);
                self.ticket(c.id, Some(order_id), at, "product_question");
                at
            }
            Issue::LowRating => {
                let at = arrived + uniform_micros(&mut self.rng, 12.0, 24.0 * 7.0);
                let rating = self.rng.random_range(1..=2);
                self.emit(
                    "reviews",
                    at,
                    vec![V::I(order_id), V::I(c.id), V::T(at), V::I32(rating)],
                );
                at
            }
            Issue::None => arrived,
        };
        if issue != Issue::LowRating && delivered.is_some() && self.rng.random_bool(0.3) {
            let at = arrived + uniform_micros(&mut self.rng, 12.0, 24.0 * 7.0);
            let rating = if issue == Issue::None {
                self.rng.random_range(4..=5)
            } else {
                self.rng.random_range(3..=4)
            };
            self.emit(
                "reviews",
                at,
                vec![V::I(order_id), V::I(c.id), V::T(at), V::I32(rating)],
            );
        }
        let days_left = (self.end_micros - t) / MICROS_PER_DAY;
        if days_left >= SETTLED_DAYS {
            *self
                .truth
                .orders_by_issue
                .entry(issue.name().into())
                .or_default() += 1;
        }
        let mut compensated = false;

        let mut p = base * issue.return_multiplier();
        // Recovery: half the bad experiences get a voucher within 7 days of the issue.
        if issue != Issue::None && self.rng.random_bool(VOUCHER_RATE) {
            let m = issue.return_multiplier();
            p = base * (m + (1.0 - m) * VOUCHER_RESTORE);
            compensated = true;
            let at = felt + uniform_micros(&mut self.rng, 1.0, 24.0 * 6.5);
            let face = [500i128, 1000, 1500][self.rng.random_range(0..3)];
            vouchers.push(PlannedVoucher {
                program: 0,
                at,
                face,
                reason: "service_recovery",
            });
        }
        // Retention programs running on the order day target some customers.
        let mut touched: Vec<(i64, bool, i64)> = Vec::new();
        for pi in 1..self.programs.len() {
            let (from, to) = self.program_days[pi];
            let prog = self.programs[pi].clone();
            if order_day < from || order_day > to || !self.rng.random_bool(prog.target_rate) {
                continue;
            }
            let holdout = self.rng.random_bool(prog.holdout_share);
            // Within a day of the order, before its outcome is felt (and so before any next order).
            let at = t + uniform_micros(&mut self.rng, 1.0, 20.0);
            if at >= self.end_micros {
                continue;
            }
            self.emit(
                "touches",
                at,
                vec![V::I(c.id), V::I(prog.program_id), V::T(at), V::B(holdout)],
            );
            touched.push((prog.program_id, holdout, at));
            if holdout {
                self.programs[pi].holdout += 1;
            } else {
                self.programs[pi].treated += 1;
                p = (p + prog.uplift).min(0.97);
                if prog.voucher_cents > 0 {
                    vouchers.push(PlannedVoucher {
                        program: pi,
                        at,
                        face: prog.voucher_cents as i128,
                        reason: "retention_offer",
                    });
                }
            }
        }
        // Truth groups: the chance of ordering again each case was given.
        let long_enough = |at: i64, days: i64| (self.end_micros - at) / MICROS_PER_DAY >= days;
        if is_first_completed && long_enough(t, OBSERVED_DAYS) {
            self.truth
                .first_order_groups
                .entry(issue.name().into())
                .or_default()
                .add(p);
        }
        if issue != Issue::None && long_enough(t, OBSERVED_DAYS + SETTLED_DAYS) {
            let key = format!(
                "{}/{}",
                issue.name(),
                if compensated {
                    "compensated"
                } else {
                    "uncompensated"
                }
            );
            self.truth.recovery_groups.entry(key).or_default().add(p);
        }
        for (program_id, holdout, at) in touched {
            if long_enough(at, OBSERVED_DAYS + SETTLED_DAYS) {
                let key = format!(
                    "{program_id}/{}",
                    if holdout { "holdout" } else { "treated" }
                );
                self.truth.program_groups.entry(key).or_default().add(p);
            }
        }
        (p, felt, vouchers)
    }

    fn refund(&mut self, order_id: i64, at: i64, amount: i128, reason: &'static str) {
        if at >= self.end_micros {
            return;
        }
        let id = self.id("refunds");
        self.refund_total += amount;
        self.emit(
            "refunds",
            at,
            vec![
                V::I(id),
                V::I(order_id),
                V::T(at),
                V::M(amount),
                V::S(reason),
            ],
        );
    }

    fn ticket(&mut self, customer: i64, order: Option<i64>, at: i64, category: &'static str) {
        let id = self.id("cs_tickets");
        let resolved = self
            .rng
            .random_bool(0.95)
            .then(|| at + uniform_micros(&mut self.rng, 0.5, 72.0));
        let csat = self
            .rng
            .random_bool(0.7)
            .then(|| self.rng.random_range(1..=5));
        self.emit(
            "cs_tickets",
            at,
            vec![
                V::I(id),
                V::I(customer),
                V::OptI(order),
                V::T(at),
                V::OptT(resolved),
                V::S(category),
                V::OptI32(csat),
            ],
        );
    }

    /// Issue a voucher; the customer's next order (time and id, if any) redeems it when it
    /// falls before expiry (85% of the time, one voucher per order).
    fn issue_voucher(&mut self, c: &mut Customer, v: PlannedVoucher, next: Option<(i64, i64)>) {
        if v.at >= self.end_micros {
            return;
        }
        let id = self.id("vouchers");
        let expires = v.at + 60 * MICROS_PER_DAY;
        self.programs[v.program].vouchers_issued += 1;
        self.voucher_issued[v.program] += v.face;
        let redeemed = match next {
            Some((n, order_id))
                if c.redeem.is_none() && v.at < n && n <= expires && self.rng.random_bool(0.85) =>
            {
                c.redeem = Some((id, v.face));
                self.voucher_redeemed[v.program] += v.face;
                if self.programs[v.program].kind == "recovery" {
                    let month = crate::finance_data::month_key(date_of_day(day_of(v.at)));
                    *self.spend_by_month.entry((v.program, month)).or_default() += v.face;
                }
                Some(order_id)
            }
            _ => None,
        };
        let pid = self.programs[v.program].program_id;
        self.emit(
            "vouchers",
            v.at,
            vec![
                V::I(id),
                V::I(c.id),
                V::I(pid),
                V::T(v.at),
                V::S(v.reason),
                V::M(v.face),
                V::T(expires),
                V::OptI(redeemed),
            ],
        );
    }
}

fn cents_text(c: i128) -> String {
    format!("{}.{:02}", c / 100, (c % 100).abs())
}

/// Generate the marketplace under `raw_root` and write `truth.json` there.
pub async fn generate(
    stores: &Stores,
    raw_root: &Url,
    opts: &GenerateOptions,
) -> Result<Generated> {
    let (store, root_path) = stores.store_for(raw_root)?;
    let start_day = day_of(
        opts.start
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros(),
    );
    let end_date = opts.start + chrono::Months::new(opts.months);
    let end_day = day_of(
        end_date
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros(),
    );
    let mut truth = Truth {
        seed: opts.seed,
        customers: opts.customers,
        start: opts.start.to_string(),
        end: date_of_day(end_day - 1).to_string(),
        voucher_rate: VOUCHER_RATE,
        voucher_restore_share: VOUCHER_RESTORE,
        ..Default::default()
    };
    for (name, _, base, gap) in CHANNELS {
        truth.base_return_probability.insert(name.into(), base);
        truth.mean_gap_days.insert(name.into(), gap);
    }
    for i in Issue::ALL {
        truth
            .issue_return_multiplier
            .insert(i.name().into(), i.return_multiplier());
    }
    let programs = programs(opts.months);
    let program_days: Vec<(i64, i64)> = programs
        .iter()
        .map(|p| {
            let from = opts.start + chrono::Months::new(p.first_month);
            let to = opts.start + chrono::Months::new(p.last_month + 1) - Duration::days(1);
            (
                day_of(
                    from.and_hms_opt(0, 0, 0)
                        .unwrap()
                        .and_utc()
                        .timestamp_micros(),
                ),
                day_of(
                    to.and_hms_opt(0, 0, 0)
                        .unwrap()
                        .and_utc()
                        .timestamp_micros(),
                ),
            )
        })
        .collect();
    let n_programs = programs.len();
    let mut sim = Sim {
        rng: ChaCha8Rng::seed_from_u64(opts.seed),
        end_micros: end_day * MICROS_PER_DAY,
        last_day: end_day - 1,
        pending: BTreeMap::new(),
        open_day: start_day,
        next_id: BTreeMap::new(),
        programs,
        program_days: program_days.clone(),
        truth: &mut truth,
        voucher_issued: vec![0; n_programs],
        voucher_redeemed: vec![0; n_programs],
        spend: vec![0; n_programs],
        spend_by_month: BTreeMap::new(),
        gmv_total: 0,
        refund_total: 0,
    };

    // Sign-ups per day: grow linearly (x1 to x2 over the period), weighted by season and weekday.
    let days = end_day - start_day;
    let weights: Vec<f64> = (0..days)
        .map(|d| (1.0 + d as f64 / days.max(1) as f64) * day_weight(start_day + d))
        .collect();
    let total_w: f64 = weights.iter().sum();
    let mut signups_per_day = Vec::with_capacity(days as usize);
    let mut carried = 0.0;
    let mut assigned = 0u64;
    for (i, w) in weights.iter().enumerate() {
        carried += opts.customers as f64 * w / total_w;
        let mut n = carried.floor() as u64;
        if i as i64 == days - 1 {
            n = opts.customers - assigned;
        }
        carried -= n as f64;
        assigned += n;
        signups_per_day.push(n);
    }

    // Only customers with a next order scheduled are kept; the others are tallied and dropped.
    let mut active: HashMap<i64, Customer> = HashMap::new();
    let mut customer_rows: Rows = Rows::default();
    let mut customer_parts = 0usize;
    // (Reverse(next order time), customer id, the order's id reserved when it was scheduled)
    let mut queue: BinaryHeap<(std::cmp::Reverse<i64>, i64, i64)> = BinaryHeap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut next_customer = 0i64;
    let mut curve = RetentionTally::new(end_day);

    for d in 0..days {
        let day = start_day + d;
        // New customers.
        for _ in 0..signups_per_day[d as usize] {
            next_customer += 1;
            let channel = {
                let weights: Vec<(usize, f64)> =
                    CHANNELS.iter().enumerate().map(|(i, c)| (i, c.1)).collect();
                pick(&mut sim.rng, &weights)
            };
            let region = sim.rng.random_range(0..REGIONS.len());
            let signup = day * MICROS_PER_DAY + sim.rng.random_range(0..MICROS_PER_DAY);
            customer_rows.0.push(vec![
                V::I(next_customer),
                V::T(signup),
                V::S(REGIONS[region]),
                V::S(CHANNELS[channel].0),
            ]);
            if !sim.rng.random_bool(NEVER_ORDER) {
                let first = signup + uniform_micros(&mut sim.rng, 0.1, 72.0);
                if first < sim.end_micros {
                    let order_id = sim.id("orders");
                    queue.push((std::cmp::Reverse(first), next_customer, order_id));
                    active.insert(
                        next_customer,
                        Customer {
                            id: next_customer,
                            channel,
                            region,
                            first_order_day: None,
                            active_months: 0,
                            redeem: None,
                        },
                    );
                }
            }
        }
        if customer_rows.0.len() >= CUSTOMERS_PER_FILE {
            write_customers(
                &store,
                &root_path,
                raw_root,
                customer_parts,
                std::mem::take(&mut customer_rows),
                &mut counts,
            )
            .await?;
            customer_parts += 1;
        }
        // Orders due today, in time order (ties by customer).
        let day_end = (day + 1) * MICROS_PER_DAY;
        while let Some((std::cmp::Reverse(t), id, order_id)) = queue.peek().copied() {
            if t >= day_end {
                break;
            }
            queue.pop();
            let mut c = active.remove(&id).expect("scheduled customers are active");
            let (p, felt, vouchers) = sim.order(&mut c, t, order_id);
            let mut next_order = None;
            if sim.rng.random_bool(p.clamp(0.0, 1.0)) {
                // Next order an exponential gap after the outcome was felt, thinned by season
                // and weekday.
                let mean = CHANNELS[c.channel].3;
                let mut next = felt.max(t);
                loop {
                    let gap_days = -mean * (1.0 - sim.rng.random::<f64>()).ln();
                    next += (gap_days * MICROS_PER_DAY as f64) as i64 + 1;
                    if sim.rng.random::<f64>() * MAX_DAY_WEIGHT <= day_weight(day_of(next)) {
                        break;
                    }
                }
                if next < sim.end_micros {
                    next_order = Some((next, sim.id("orders")));
                }
            }
            for v in vouchers {
                sim.issue_voucher(&mut c, v, next_order);
            }
            match next_order {
                Some((next, next_id)) => {
                    queue.push((std::cmp::Reverse(next), id, next_id));
                    active.insert(id, c);
                }
                None => curve.add(&c),
            }
        }
        // Marketing spend of programs running today.
        for pi in 1..sim.programs.len() {
            let (from, to) = program_days[pi];
            if day >= from && day <= to && sim.programs[pi].kind != "recovery" {
                let id = sim.id("marketing_spend");
                let amount = sim.rng.random_range(300i128..1_500);
                let channel = ["email", "push", "paid_social"][sim.rng.random_range(0..3)];
                let pid = sim.programs[pi].program_id;
                let date = (day) as i32;
                sim.spend[pi] += amount;
                *sim.spend_by_month
                    .entry((pi, crate::finance_data::month_key(date_of_day(day))))
                    .or_default() += amount;
                sim.emit(
                    "marketing_spend",
                    day * MICROS_PER_DAY,
                    vec![V::I(id), V::I(pid), V::S(channel), V::D(date), V::M(amount)],
                );
            }
        }
        // Close the day: write every day that is due.
        sim.open_day = day + 1;
        let due: Vec<i64> = sim.pending.range(..=day).map(|(d, _)| *d).collect();
        for d in due {
            let rows = sim.pending.remove(&d).expect("due day");
            write_day(&store, &root_path, raw_root, d, rows, &mut counts).await?;
        }
    }
    // Flush what is left (late arrivals capped at the last day).
    let rest: Vec<i64> = sim.pending.keys().copied().collect();
    for d in rest {
        let rows = sim.pending.remove(&d).expect("pending day");
        write_day(
            &store,
            &root_path,
            raw_root,
            d.min(sim.last_day),
            rows,
            &mut counts,
        )
        .await?;
    }

    // Dimension tables.
    if !customer_rows.0.is_empty() {
        write_customers(
            &store,
            &root_path,
            raw_root,
            customer_parts,
            customer_rows,
            &mut counts,
        )
        .await?;
    }
    assert!(
        active.is_empty(),
        "every scheduled order falls before the end"
    );
    let mut program_rows = Rows::default();
    for (p, (from, to)) in sim.programs.iter().zip(&program_days) {
        let holdout = (p.holdout_share * 10_000.0).round() as i128;
        program_rows.0.push(vec![
            V::I(p.program_id),
            V::Str(p.name.clone()),
            V::Str(p.kind.clone()),
            V::D(*from as i32),
            V::D(*to as i32),
            V::M(holdout),
        ]);
    }
    counts.insert("programs".into(), program_rows.0.len() as u64);
    let batch = program_rows.to_batch(&schema("programs"))?;
    put(
        &store,
        &root_path.clone().join("programs").join("part-0000.parquet"),
        parquet_bytes(schema("programs"), &[batch])?,
        raw_root,
    )
    .await?;

    // Truth: programs' exact totals and the retention tallies.
    let spend = sim.spend.clone();
    let spend_by_month = std::mem::take(&mut sim.spend_by_month);
    let issued = sim.voucher_issued.clone();
    let redeemed = sim.voucher_redeemed.clone();
    let (gmv_total, refund_total) = (sim.gmv_total, sim.refund_total);
    let mut programs = sim.programs.clone();
    drop(sim);
    for (i, p) in programs.iter_mut().enumerate() {
        p.marketing_spend = cents_text(spend[i]);
        p.voucher_value_issued = cents_text(issued[i]);
        p.voucher_value_redeemed = cents_text(redeemed[i]);
    }
    truth.programs = programs;
    truth.gmv_total = cents_text(gmv_total);
    truth.refund_total = cents_text(refund_total);
    // Finance: plan, ledger and FX consistent with the spend above.
    let program_ids: Vec<i64> = truth.programs.iter().map(|p| p.program_id).collect();
    let (finance_counts, finance) = crate::finance_data::generate(
        &store,
        &root_path,
        raw_root,
        opts,
        &spend_by_month,
        &program_ids,
    )
    .await?;
    counts.extend(finance_counts);
    truth.finance = finance;
    truth.retention_active = curve.active;
    truth.retention_eligible = curve.eligible;
    let json = serde_json::to_vec_pretty(&truth).map_err(|e| Error::DataFusion(e.to_string()))?;
    put(
        &store,
        &root_path.clone().join("truth.json"),
        json,
        raw_root,
    )
    .await?;
    Ok(Generated {
        tables: counts,
        truth,
    })
}

/// Customers per `customers/part-NNNN.parquet` file.
const CUSTOMERS_PER_FILE: usize = 200_000;

async fn write_customers(
    store: &Arc<dyn ObjectStore>,
    root: &StorePath,
    location: &Url,
    part: usize,
    rows: Rows,
    counts: &mut BTreeMap<String, u64>,
) -> Result<()> {
    *counts.entry("customers".into()).or_default() += rows.0.len() as u64;
    let batch = rows.to_batch(&schema("customers"))?;
    let path = root
        .clone()
        .join("customers")
        .join(format!("part-{part:04}.parquet").as_str());
    put(
        store,
        &path,
        parquet_bytes(schema("customers"), &[batch])?,
        location,
    )
    .await
}

/// Per channel, customers active k months after their first completed order and customers
/// whose cohort reached month k by the end (k = 0..=12), tallied as customers finish.
struct RetentionTally {
    last_day: i64,
    active: BTreeMap<String, Vec<u64>>,
    eligible: BTreeMap<String, Vec<u64>>,
}

impl RetentionTally {
    fn new(end_day: i64) -> Self {
        let zero = || {
            CHANNELS
                .iter()
                .map(|c| (c.0.to_string(), vec![0u64; 13]))
                .collect::<BTreeMap<_, _>>()
        };
        RetentionTally {
            last_day: end_day - 1,
            active: zero(),
            eligible: zero(),
        }
    }

    fn add(&mut self, c: &Customer) {
        let Some(first) = c.first_order_day else {
            return;
        };
        let name = CHANNELS[c.channel].0;
        let reach = months_between(first, self.last_day);
        for k in 0..13usize {
            if (k as i64) <= reach {
                self.eligible.get_mut(name).expect("channel")[k] += 1;
                if c.active_months & (1u128 << k) != 0 {
                    self.active.get_mut(name).expect("channel")[k] += 1;
                }
            }
        }
    }
}

async fn write_day(
    store: &Arc<dyn ObjectStore>,
    root: &StorePath,
    location: &Url,
    day: i64,
    rows: Day,
    counts: &mut BTreeMap<String, u64>,
) -> Result<()> {
    let date = date_of_day(day);
    let dir = format!("dt={date}");
    for (table, rows) in rows.tables {
        if rows.0.is_empty() {
            continue;
        }
        *counts.entry(table.to_string()).or_default() += rows.0.len() as u64;
        let schema = schema(table);
        let batch = rows.to_batch(&schema)?;
        // One file per table and day; a later flush of the same day (late rows) adds a part.
        let mut part = 0;
        let path = loop {
            let p = root
                .clone()
                .join(table)
                .join(dir.as_str())
                .join(format!("part-{part:04}.parquet").as_str());
            match store.head(&p).await {
                Ok(_) => part += 1,
                Err(_) => break p,
            }
        };
        put(store, &path, parquet_bytes(schema, &[batch])?, location).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let sources = crate::sources::load(&dir, &root).unwrap();
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
                "budget_plan" => crate::finance_data::plan_schema(),
                "spend_ledger" => crate::finance_data::ledger_schema(),
                "fx_rates" => crate::finance_data::fx_schema(),
                other => schema(other),
            };
            s.check_schema(&generated, "generated").unwrap();
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
