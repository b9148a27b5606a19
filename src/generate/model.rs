//! The planted model: every rate, effect and constant the simulation draws from, the calendar it
//! runs on, the options it runs with, and the `Truth` (with its money as decimal text, finance's
//! included) written to `truth.json`. It imports no other part of the generator.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use datafusion::arrow::datatypes::{DECIMAL128_MAX_PRECISION, Decimal128Type, DecimalType};
use serde::{Deserialize, Serialize};

use crate::engine::utc_date::civil_from_days;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub seed: u64,
    /// Customers who sign up over the period.
    pub customers: u64,
    pub months: u32,
    pub start: NaiveDate,
    /// Ledger lines per booked entry (volume for finance benchmarks and tests; default 1).
    pub ledger_lines: usize,
    /// Customers who buy exactly as BG/NBD says, instead of the marketplace's purchase model:
    /// the ground truth a CLV fit must recover. None (default) for the marketplace.
    pub bgnbd: Option<PlantedBgNbd>,
}

/// BG/NBD parameters to plant, with `alpha` in days: each customer's purchase rate per day is
/// drawn from gamma(r, alpha), their dropout chance after each purchase from beta(a, b); gaps
/// are exponential, with no cancellation, seasonality or effect of experiences and vouchers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlantedBgNbd {
    pub r: f64,
    pub alpha_days: f64,
    pub a: f64,
    pub b: f64,
}

impl std::str::FromStr for PlantedBgNbd {
    type Err = String;

    /// `r,alpha_days,a,b`, each a positive number: `0.6,40,0.8,2.4`.
    fn from_str(text: &str) -> Result<Self, String> {
        let values: Vec<f64> = text
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("`{text}`: expected r,alpha_days,a,b as numbers ({e})"))?;
        match values[..] {
            [r, alpha_days, a, b] if values.iter().all(|v| v.is_finite() && *v > 0.0) => {
                Ok(PlantedBgNbd {
                    r,
                    alpha_days,
                    a,
                    b,
                })
            }
            _ => Err(format!(
                "`{text}`: expected four positive numbers r,alpha_days,a,b"
            )),
        }
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            seed: 42,
            customers: 20_000,
            months: 24,
            start: NaiveDate::from_ymd_opt(2024, 11, 1).expect("valid date"),
            ledger_lines: 1,
            bgnbd: None,
        }
    }
}

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

/// Acquisition channels with their share of sign-ups, chance of ordering again after an order
/// without issues, and mean days until that next order.
pub const CHANNELS: [(&str, f64, f64, f64); 4] = [
    ("organic", 0.35, 0.62, 30.0),
    ("search", 0.30, 0.55, 35.0),
    ("social", 0.20, 0.42, 40.0),
    ("referral", 0.15, 0.68, 28.0),
];
pub const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
pub(super) const CATEGORIES: [&str; 6] = [
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
pub(super) const TRAFFIC: [(&str, f64); 5] = [
    ("search", 0.35),
    ("feed", 0.25),
    ("live", 0.10),
    ("ads", 0.20),
    ("affiliate", 0.10),
];
/// Chance of each bad experience besides delivery (which depends on the carrier), in priority
/// order after `lost_parcel` and before `late_delivery` for returns and refunds.
pub(super) const ISSUE_RATES: [(Issue, f64); 4] = [
    (Issue::Returned, 0.05),
    (Issue::Refunded, 0.03),
    (Issue::SupportContact, 0.05),
    (Issue::LowRating, 0.03),
];
/// Share of customers who never order after signing up.
pub(super) const NEVER_ORDER: f64 = 0.12;
pub(super) const CANCEL_RATE: f64 = 0.03;
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

/// The four programs of a run of `months` months, with their totals still empty.
pub(super) fn programs(months: u32) -> Vec<ProgramTruth> {
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

/// First and last day of each program.
pub(super) fn program_days(start: NaiveDate, programs: &[ProgramTruth]) -> Vec<(i64, i64)> {
    programs
        .iter()
        .map(|p| {
            let from = start + chrono::Months::new(p.first_month);
            let to = start + chrono::Months::new(p.last_month + 1) - Duration::days(1);
            (day_of_date(from), day_of_date(to))
        })
        .collect()
}

/// Everything `generate` planted, written to `truth.json` at the raw root.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Truth {
    pub seed: u64,
    pub customers: u64,
    pub start: String,
    /// Months of the planned period: sign-ups, programs and finance span them whatever `end` is.
    pub months: u32,
    pub ledger_lines: usize,
    /// Last day with data: the period's last day, or the `--through` day of an extendable lake.
    pub end: String,
    /// The BG/NBD parameters every customer was drawn from, when the run planted them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planted_bgnbd: Option<PlantedBgNbd>,
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
    pub finance: FinanceTruth,
}

impl Truth {
    /// The planted parameters of a run of `opts` whose last day is `end_day - 1`; the tallies
    /// are filled as the simulation runs.
    pub(super) fn planted(opts: &GenerateOptions, end_day: i64) -> Self {
        let mut truth = Truth {
            seed: opts.seed,
            customers: opts.customers,
            start: opts.start.to_string(),
            months: opts.months,
            ledger_lines: opts.ledger_lines,
            end: date_of_day(end_day - 1).to_string(),
            voucher_rate: VOUCHER_RATE,
            voucher_restore_share: VOUCHER_RESTORE,
            planted_bgnbd: opts.bgnbd,
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
        truth
    }
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
    pub(super) fn add(&mut self, p: f64) {
        self.cases += 1;
        self.sum_p += p;
        self.mean_return_probability = self.sum_p / self.cases as f64;
    }

    /// Add another shard's cases of the same kind.
    pub(super) fn merge(&mut self, other: &Group) {
        self.cases += other.cases;
        self.sum_p += other.sum_p;
        self.mean_return_probability = self.sum_p / self.cases as f64;
    }
}

/// Days before the end an order must be placed for all its consequences to be in the data.
pub const SETTLED_DAYS: i64 = 30;
/// Days of observation the truth groups need (the marts' longest repurchase window).
pub const OBSERVED_DAYS: i64 = 90;

// ---------------------------------------------------------------------------------------------
// The calendar: days since 1970-01-01 (UTC) and microsecond timestamps.
// ---------------------------------------------------------------------------------------------

pub(super) const MICROS_PER_DAY: i64 = 86_400_000_000;
pub(super) const MICROS_PER_HOUR: i64 = 3_600_000_000;

pub(super) fn day_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_DAY)
}

/// Day number of a date's midnight.
pub(super) fn day_of_date(date: NaiveDate) -> i64 {
    day_of(
        date.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros(),
    )
}

pub(super) fn date_of_day(day: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + Duration::days(day)
}

/// The month of a day number, counted in months from year 0 (civil arithmetic, no calendar).
fn month_index(day: i64) -> i64 {
    let (year, month, _) = civil_from_days(day);
    year * 12 + month as i64
}

pub(super) fn months_between(a_day: i64, b_day: i64) -> i64 {
    month_index(b_day) - month_index(a_day)
}

/// Season and weekday weight of a day (peak in November and December, busier weekends).
pub(super) fn day_weight(day: i64) -> f64 {
    let season = if matches!(civil_from_days(day).1, 11 | 12) {
        1.3
    } else {
        1.0
    };
    // 1970-01-01, day 0, was a Thursday: days from Monday, 5 and 6 are the weekend.
    let weekend = if (day + 3).rem_euclid(7) >= 5 {
        1.15
    } else {
        1.0
    };
    season * weekend
}
pub(super) const MAX_DAY_WEIGHT: f64 = 1.3 * 1.15;

/// Cents as decimal text (`-0.05`, `123.45`), formatted by arrow as a `Decimal128(38, 2)`.
pub(crate) fn cents_text(cents: i128) -> String {
    Decimal128Type::format_decimal(cents, DECIMAL128_MAX_PRECISION, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_bgnbd_parses_four_positive_numbers() {
        let m: PlantedBgNbd = " 0.6, 40,0.8 ,2.4".parse().unwrap();
        assert_eq!(
            m,
            PlantedBgNbd {
                r: 0.6,
                alpha_days: 40.0,
                a: 0.8,
                b: 2.4
            }
        );
        for bad in [
            "0.6,40,0.8",
            "0.6,-40,0.8,2.4",
            "0.6,40,0.8,2.4,1",
            "0,40,0.8,2.4",
        ] {
            let e = bad.parse::<PlantedBgNbd>().unwrap_err();
            assert!(
                e.contains(bad) && e.contains("four positive numbers"),
                "{e}"
            );
        }
        let e = "r,40,0.8,2.4".parse::<PlantedBgNbd>().unwrap_err();
        assert!(e.contains("expected r,alpha_days,a,b as numbers"), "{e}");
    }

    #[test]
    fn day_weights_and_month_distances_follow_the_calendar() {
        let day = |text: &str| day_of_date(text.parse().unwrap());
        // Saturday 2 November 2024: season and weekend; Monday 6 January 2025: neither.
        assert_eq!(day_weight(day("2024-11-02")), 1.3 * 1.15);
        assert_eq!(day_weight(day("2024-12-04")), 1.3);
        assert_eq!(day_weight(day("2025-01-05")), 1.15);
        assert_eq!(day_weight(day("2025-01-06")), 1.0);
        assert_eq!(day_weight(day("1969-12-28")), 1.3 * 1.15);
        assert_eq!(months_between(day("2024-12-31"), day("2025-01-01")), 1);
        assert_eq!(months_between(day("2024-11-01"), day("2024-11-30")), 0);
        assert_eq!(months_between(day("2024-11-30"), day("2026-10-01")), 23);
        assert_eq!(months_between(day("2025-03-01"), day("2025-02-28")), -1);
    }

    #[test]
    fn cents_text_keeps_the_sign_below_one_unit() {
        assert_eq!(cents_text(-5), "-0.05");
        assert_eq!(cents_text(-150), "-1.50");
        assert_eq!(cents_text(-99), "-0.99");
        assert_eq!(cents_text(0), "0.00");
        assert_eq!(cents_text(5), "0.05");
        assert_eq!(cents_text(12345), "123.45");
    }
}
