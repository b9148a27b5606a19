//! The simulation: customers sign up, order, and order again with the planted chances. Each
//! order brings its sessions, shipment, returns, refunds, tickets, reviews, program touches and
//! vouchers, queued as rows for the day they happen; the truth is tallied as it goes. One `Sim`
//! simulates one customer shard: every random draw comes from the shard's own stream of the
//! seeded ChaCha8 generator, in a fixed order, and its ids are its own residue class.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::finance::month_key;
use super::model::{
    CANCEL_RATE, CARRIERS, CATEGORIES, CHANNELS, ISSUE_RATES, Issue, MAX_DAY_WEIGHT,
    MICROS_PER_DAY, MICROS_PER_HOUR, MonthlySpend, NEVER_ORDER, OBSERVED_DAYS, ProgramTruth,
    REGIONS, SETTLED_DAYS, TRAFFIC, Truth, VOUCHER_RATE, VOUCHER_RESTORE, cents_text, date_of_day,
    day_of, day_weight, months_between, program_days, programs,
};
use super::model::{GenerateOptions, PlantedBgNbd};
use super::raw::{Day, EVENT_TABLES, Rows, Table, V, schema};
use rand_distr::{Beta, Distribution, Exp, Gamma};

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

/// Sign-ups per day: grow linearly (x1 to x2 over the period), weighted by season and weekday;
/// the last day takes what rounding left over.
pub(super) fn signups_per_day(customers: u64, start_day: i64, days: i64) -> Vec<u64> {
    let weights: Vec<f64> = (0..days)
        .map(|d| (1.0 + d as f64 / days.max(1) as f64) * day_weight(start_day + d))
        .collect();
    let total_w: f64 = weights.iter().sum();
    let mut signups_per_day = Vec::with_capacity(days as usize);
    let mut carried = 0.0;
    let mut assigned = 0u64;
    for (i, w) in weights.iter().enumerate() {
        carried += customers as f64 * w / total_w;
        let mut n = carried.floor() as u64;
        if i as i64 == days - 1 {
            n = customers - assigned;
        }
        carried -= n as f64;
        assigned += n;
        signups_per_day.push(n);
    }
    signups_per_day
}

/// A customer's small state between orders.
#[derive(Debug, Clone)]
struct Customer {
    id: i64,
    /// Index in `CHANNELS` and in `REGIONS`: one byte each keeps the customers the schedule
    /// sorts and moves small.
    channel: u8,
    region: u8,
    first_order_day: Option<i64>,
    /// Months (since first order) with an order, as a bit set (k < 128).
    active_months: u128,
    /// Voucher the next order redeems: (voucher id, face cents).
    redeem: Option<(i64, i64)>,
    /// Under planted BG/NBD: purchase rate per day and dropout chance after each purchase.
    purchase: Option<(f64, f64)>,
}

impl Customer {
    /// Count a completed order on `order_day` for the cohort and activity, as the marts do.
    fn mark_active(&mut self, order_day: i64) {
        let first_day = *self.first_order_day.get_or_insert(order_day);
        let k = months_between(first_day, order_day);
        if (0..128).contains(&k) {
            self.active_months |= 1u128 << k;
        }
    }
}

/// A voucher to issue once the customer's next order time is known.
struct PlannedVoucher {
    program: usize,
    at: i64,
    face: i128,
    reason: &'static str,
}

/// How a shipment went.
struct Shipment {
    /// `LostParcel`, `LateDelivery` or `None`.
    issue: Issue,
    promised: i64,
    delivered: Option<i64>,
}

/// A program touch: (program id, holdout, time).
type Touch = (i64, bool, i64);

/// Per channel, customers active k months after their first completed order and customers
/// whose cohort reached month k by the end (k = 0..=12), tallied as customers finish.
#[derive(Debug, Clone)]
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
        let name = CHANNELS[usize::from(c.channel)].0;
        let reach = months_between(first, self.last_day);
        let eligible = self.eligible.get_mut(name).expect("channel");
        let active = self.active.get_mut(name).expect("channel");
        for k in 0..13usize {
            if (k as i64) <= reach {
                eligible[k] += 1;
                if c.active_months & (1u128 << k) != 0 {
                    active[k] += 1;
                }
            }
        }
    }
}

/// A total the truth reports, counted on the day its row lands in the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tally {
    Gmv,
    Refunds,
    /// Per program index.
    Spend(usize),
    Treated(usize),
    Holdout(usize),
    VouchersIssued(usize),
    VoucherValueIssued(usize),
    VoucherValueRedeemed(usize),
}

impl Tally {
    /// The tally's place in a day's totals: the two money totals, then six per program.
    fn slot(self) -> usize {
        let program = |pi: usize, k: usize| 2 + 6 * pi + k;
        match self {
            Tally::Gmv => 0,
            Tally::Refunds => 1,
            Tally::Spend(pi) => program(pi, 0),
            Tally::Treated(pi) => program(pi, 1),
            Tally::Holdout(pi) => program(pi, 2),
            Tally::VouchersIssued(pi) => program(pi, 3),
            Tally::VoucherValueIssued(pi) => program(pi, 4),
            Tally::VoucherValueRedeemed(pi) => program(pi, 5),
        }
    }

    /// The tally at `slot`.
    fn of_slot(slot: usize) -> Tally {
        let kinds = [
            Tally::Spend,
            Tally::Treated,
            Tally::Holdout,
            Tally::VouchersIssued,
            Tally::VoucherValueIssued,
            Tally::VoucherValueRedeemed,
        ];
        match slot {
            0 => Tally::Gmv,
            1 => Tally::Refunds,
            _ => kinds[(slot - 2) % 6]((slot - 2) / 6),
        }
    }
}

/// The truth's totals by day, so that a lake cut after any day reports exactly its own rows:
/// per day from `first_day`, the totals by [`Tally::slot`] (an order adds to them, so no map).
#[derive(Debug)]
struct DayTallies {
    first_day: i64,
    days: Vec<Vec<i128>>,
}

impl DayTallies {
    fn new(first_day: i64) -> Self {
        DayTallies {
            first_day,
            days: Vec::new(),
        }
    }

    fn add(&mut self, day: Option<i64>, tally: Tally, amount: i128) {
        let Some(day) = day else {
            return;
        };
        let d = (day - self.first_day) as usize;
        if d >= self.days.len() {
            self.days.resize_with(d + 1, Vec::new);
        }
        let (totals, slot) = (&mut self.days[d], tally.slot());
        if slot >= totals.len() {
            totals.resize(slot + 1, 0);
        }
        totals[slot] += amount;
    }

    /// Every total over the days up to `last_day`.
    fn through(&self, last_day: i64) -> BTreeMap<Tally, i128> {
        let mut totals = BTreeMap::new();
        let days = (last_day - self.first_day + 1).max(0) as usize;
        for day in self.days.iter().take(days) {
            for (slot, &amount) in day.iter().enumerate() {
                *totals.entry(Tally::of_slot(slot)).or_default() += amount;
            }
        }
        totals
    }
}

/// One shard's part of the truth: its groups (in a `Truth` otherwise empty), its totals and its
/// retention tallies. The shards' parts add up to the truth of the whole lake.
pub(super) struct TruthTally {
    groups: Truth,
    totals: BTreeMap<Tally, i128>,
    curve: RetentionTally,
}

impl TruthTally {
    /// Add `other`'s counts, sums and totals to these.
    pub(super) fn merge(&mut self, other: TruthTally) {
        let (mine, theirs) = (&mut self.groups, other.groups);
        for (issue, n) in theirs.orders_by_issue {
            *mine.orders_by_issue.entry(issue).or_default() += n;
        }
        for (groups, more) in [
            (&mut mine.first_order_groups, theirs.first_order_groups),
            (&mut mine.recovery_groups, theirs.recovery_groups),
            (&mut mine.program_groups, theirs.program_groups),
        ] {
            for (key, g) in more {
                groups.entry(key).or_default().merge(&g);
            }
        }
        for (tally, amount) in other.totals {
            *self.totals.entry(tally).or_default() += amount;
        }
        for (mine, theirs) in [
            (&mut self.curve.active, other.curve.active),
            (&mut self.curve.eligible, other.curve.eligible),
        ] {
            for (channel, counts) in theirs {
                let sums = mine.get_mut(&channel).expect("every channel is tallied");
                sums.iter_mut().zip(counts).for_each(|(sum, n)| *sum += n);
            }
        }
    }

    /// The `planted` truth with these tallies: the groups, the programs' exact totals, the
    /// money totals and the retention curve.
    pub(super) fn into_truth(self, planted: Truth, programs: &[ProgramTruth]) -> Truth {
        let total = |t: Tally| self.totals.get(&t).copied().unwrap_or(0);
        let mut truth = Truth {
            orders_by_issue: self.groups.orders_by_issue,
            first_order_groups: self.groups.first_order_groups,
            recovery_groups: self.groups.recovery_groups,
            program_groups: self.groups.program_groups,
            programs: programs.to_vec(),
            gmv_total: cents_text(total(Tally::Gmv)),
            refund_total: cents_text(total(Tally::Refunds)),
            retention_active: self.curve.active,
            retention_eligible: self.curve.eligible,
            ..planted
        };
        for (i, p) in truth.programs.iter_mut().enumerate() {
            p.marketing_spend = cents_text(total(Tally::Spend(i)));
            p.treated = total(Tally::Treated(i)) as u64;
            p.holdout = total(Tally::Holdout(i)) as u64;
            p.vouchers_issued = total(Tally::VouchersIssued(i)) as u64;
            p.voucher_value_issued = cents_text(total(Tally::VoucherValueIssued(i)));
            p.voucher_value_redeemed = cents_text(total(Tally::VoucherValueRedeemed(i)));
        }
        truth
    }
}

/// The tally of group `key` in `groups`, allocating the key only when the group is new.
fn group<'a, T: Default>(groups: &'a mut BTreeMap<String, T>, key: &str) -> &'a mut T {
    if !groups.contains_key(key) {
        groups.insert(key.to_owned(), T::default());
    }
    groups.get_mut(key).expect("inserted")
}

/// A customer's next order: its time, the customer, and the order's id reserved when it was
/// scheduled. Ordered as the simulation places orders: by time, ties by the larger customer id
/// (the larger value first).
struct Scheduled {
    t: i64,
    order_id: i64,
    customer: Customer,
}

impl Scheduled {
    fn key(&self) -> (Reverse<i64>, i64, i64) {
        (Reverse(self.t), self.customer.id, self.order_id)
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// The customers with a next order, by its day: the day being placed sorted, later days in a
/// bucket each (sorted when their day opens). Orders come out in the order one heap of them all
/// would give.
struct Schedule {
    first_day: i64,
    /// The day being placed.
    day: i64,
    /// The day being placed, in order: the next order is the last.
    today: Vec<Scheduled>,
    /// Orders scheduled while the day is placed that fall on it.
    added: BinaryHeap<Scheduled>,
    /// The orders of day `first_day + i`, while that day is later than the one being placed.
    later: Vec<Vec<Scheduled>>,
}

impl Schedule {
    fn new(first_day: i64, end_day: i64) -> Self {
        Schedule {
            first_day,
            day: first_day - 1,
            today: Vec::new(),
            added: BinaryHeap::new(),
            later: (first_day..end_day).map(|_| Vec::new()).collect(),
        }
    }

    /// Schedule `next`, whose time falls in the period.
    fn push(&mut self, next: Scheduled) {
        let day = day_of(next.t);
        if day == self.day {
            self.added.push(next);
        } else {
            self.later[(day - self.first_day) as usize].push(next);
        }
    }

    /// Start placing `day`'s orders.
    fn open(&mut self, day: i64) {
        debug_assert!(
            self.today.is_empty() && self.added.is_empty(),
            "the day before was placed"
        );
        self.day = day;
        self.today = std::mem::take(&mut self.later[(day - self.first_day) as usize]);
        self.today.sort_unstable();
    }

    /// The next order of the day being placed.
    fn pop(&mut self) -> Option<Scheduled> {
        match (self.today.last(), self.added.peek()) {
            (Some(sorted), Some(added)) if added > sorted => self.added.pop(),
            (Some(_), _) => self.today.pop(),
            (None, _) => self.added.pop(),
        }
    }

    /// Every customer with a next order.
    fn customers(&self) -> impl Iterator<Item = &Customer> {
        let later = self.later.iter().flatten();
        let today = self.today.iter().chain(self.added.iter());
        today.chain(later).map(|s| &s.customer)
    }

    fn is_empty(&self) -> bool {
        self.customers().next().is_none()
    }
}

/// Which of the generator's customer shards a simulation is: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shard {
    pub(super) index: u64,
    pub(super) count: u64,
}

impl Shard {
    /// The shard's `n`-th id (from 1) of a table: ids are `index + 1` modulo `count`, so the
    /// shards never give the same id.
    fn id(self, n: i64) -> i64 {
        (n - 1) * self.count as i64 + self.index as i64 + 1
    }

    /// Of the `n` customers signing up on `day`, how many fall to this shard: an equal share,
    /// the remainder going to the shards after the day's turn (so a small day is spread out).
    fn signups(self, day: i64, n: u64) -> u64 {
        let turn = (self.index as i64 - day).rem_euclid(self.count as i64) as u64;
        n / self.count + u64::from(turn < n % self.count)
    }

    /// The ids of this shard's customers among the `n` who sign up on `day` with ids from
    /// `first_id`: the shards take consecutive blocks in shard order.
    fn signup_ids(self, day: i64, first_id: i64, n: u64) -> std::ops::Range<i64> {
        let before: u64 = (0..self.index)
            .map(|index| Shard { index, ..self }.signups(day, n))
            .sum();
        let from = first_id + before as i64;
        from..from + self.signups(day, n) as i64
    }
}

/// The simulation's state. Only customers with a next order scheduled are kept; the others are
/// tallied and dropped. It always runs the whole planned period (its draws never depend on how
/// much of it is written); the truth is taken as of `through_day`.
pub(super) struct Sim {
    shard: Shard,
    rng: ChaCha8Rng,
    end_micros: i64,
    last_day: i64,
    /// The last day the truth describes, and the first instant after it.
    through_day: i64,
    through_end: i64,
    /// Rows of the days not yet written: `pending[i]` lands on day `open_day + i`.
    pending: VecDeque<Day>,
    /// The first day not yet written.
    open_day: i64,
    /// The last id given per event table.
    next_id: [i64; EVENT_TABLES.len()],
    /// Rows per event table of the last day closed: the room a new day's rows start with.
    day_rows: [usize; EVENT_TABLES.len()],
    programs: Vec<ProgramTruth>,
    program_days: Vec<(i64, i64)>,
    truth: Truth,
    tallies: DayTallies,
    /// Per program index and month: marketing spend, and for recovery the redeemed vouchers.
    spend_by_month: MonthlySpend,
    /// The customers with a next order; the others are tallied and dropped.
    queue: Schedule,
    /// Customer rows not yet written.
    customer_rows: Rows,
    curve: RetentionTally,
    /// Planted BG/NBD parameters, when customers follow BG/NBD instead of the marketplace.
    bgnbd: Option<PlantedBgNbd>,
    /// The key of a truth group being tallied (kept to save an allocation per order).
    group_key: String,
}

impl Sim {
    /// The simulation of `shard` over `opts`' period, `start_day..end_day`, whose truth is taken
    /// as of `through_day`.
    pub(super) fn new(
        opts: &GenerateOptions,
        shard: Shard,
        (start_day, end_day): (i64, i64),
        through_day: i64,
    ) -> Self {
        let programs = programs(opts.months);
        let program_days = program_days(opts.start, &programs);
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        rng.set_stream(shard.index);
        Sim {
            shard,
            rng,
            end_micros: end_day * MICROS_PER_DAY,
            last_day: end_day - 1,
            through_day,
            through_end: (through_day + 1) * MICROS_PER_DAY,
            pending: VecDeque::new(),
            open_day: start_day,
            next_id: [0; EVENT_TABLES.len()],
            day_rows: [0; EVENT_TABLES.len()],
            programs,
            program_days,
            truth: Truth::default(),
            tallies: DayTallies::new(start_day),
            spend_by_month: BTreeMap::new(),
            queue: Schedule::new(start_day, end_day),
            customer_rows: Rows::new(schema("customers")),
            curve: RetentionTally::new(through_day + 1),
            bgnbd: opts.bgnbd,
            group_key: String::new(),
        }
    }

    fn id(&mut self, table: Table) -> i64 {
        let n = &mut self.next_id[table as usize];
        *n += 1;
        self.shard.id(*n)
    }

    /// The customers signed up since the last call.
    pub(super) fn take_customer_rows(&mut self) -> Rows {
        std::mem::replace(&mut self.customer_rows, Rows::new(schema("customers")))
    }

    /// Queue a row for the day of `at` (or the first open day, when it arrives late); 2% of
    /// delivery, refund and ticket events land one to three days late on purpose. Returns the
    /// day the row lands on, or None when it falls after the period.
    #[inline(always)]
    fn emit<const N: usize>(&mut self, table: Table, at: i64, row: [V; N]) -> Option<i64> {
        if at >= self.end_micros {
            return None;
        }
        let mut day = day_of(at).max(self.open_day);
        let late = matches!(table, Table::Shipments | Table::Refunds | Table::CsTickets);
        if late && self.rng.random_bool(0.02) {
            day += self.rng.random_range(1..=3);
        }
        let day = day.min(self.last_day);
        let expected = self.day_rows[table as usize];
        let expected = expected + expected / 8 + 8;
        let ahead = (day - self.open_day) as usize;
        if ahead >= self.pending.len() {
            self.pending.resize_with(ahead + 1, Day::default);
        }
        let rows = self.pending[ahead].rows(table, expected);
        rows.push(row);
        Some(day)
    }

    // -----------------------------------------------------------------------------------------
    // One day.
    // -----------------------------------------------------------------------------------------

    /// This shard's customers among the `n` who sign up on `day` with ids from `first_id`;
    /// those who will order get their first order scheduled.
    pub(super) fn sign_up(&mut self, day: i64, first_id: i64, n: u64) {
        let ids = self.shard.signup_ids(day, first_id, n);
        let weights: Vec<(usize, f64)> =
            CHANNELS.iter().enumerate().map(|(i, c)| (i, c.1)).collect();
        if self.customer_rows.is_empty() {
            self.customer_rows =
                Rows::with_capacity(schema("customers"), (ids.end - ids.start) as usize);
        }
        for id in ids {
            let channel = pick(&mut self.rng, &weights);
            let region = self.rng.random_range(0..REGIONS.len());
            let signup = day * MICROS_PER_DAY + self.rng.random_range(0..MICROS_PER_DAY);
            self.customer_rows.push([
                V::I(id),
                V::T(signup),
                V::S(REGIONS[region]),
                V::S(CHANNELS[channel].0),
            ]);
            if self.rng.random_bool(NEVER_ORDER) {
                continue;
            }
            let first = signup + uniform_micros(&mut self.rng, 0.1, 72.0);
            if first < self.end_micros {
                let order_id = self.id(Table::Orders);
                let customer = Customer {
                    id,
                    channel: u8::try_from(channel).expect("a channel index fits a byte"),
                    region: u8::try_from(region).expect("a region index fits a byte"),
                    first_order_day: None,
                    active_months: 0,
                    redeem: None,
                    purchase: self.bgnbd.map(|m| self.planted_purchase(m)),
                };
                self.queue.push(Scheduled {
                    t: first,
                    order_id,
                    customer,
                });
            }
        }
    }

    /// A customer's BG/NBD draw: rate per day ~ gamma(r, alpha), dropout ~ beta(a, b).
    fn planted_purchase(&mut self, m: PlantedBgNbd) -> (f64, f64) {
        let rate = Gamma::new(m.r, 1.0 / m.alpha_days)
            .expect("validated parameters")
            .sample(&mut self.rng);
        let dropout = Beta::new(m.a, m.b)
            .expect("validated parameters")
            .sample(&mut self.rng);
        (rate, dropout)
    }

    /// Place the orders due on `day`, in time order (ties by customer); schedule each customer's
    /// next order, or tally the customer's retention when there is none.
    pub(super) fn orders_due(&mut self, day: i64) {
        self.queue.open(day);
        while let Some(Scheduled {
            t,
            order_id,
            customer: mut c,
        }) = self.queue.pop()
        {
            let first_purchase = c.first_order_day.is_none();
            let (p, felt, vouchers) = self.order(&mut c, t, order_id);
            // Planted BG/NBD: the dropout chance alone decides, whatever the experience; a
            // customer can drop out only after a repeat purchase, not after the first.
            let p = match c.purchase {
                Some(_) if first_purchase => 1.0,
                Some((_, dropout)) => 1.0 - dropout,
                None => p,
            };
            let next_order = self.next_order(&c, p, t, felt);
            for v in vouchers {
                self.issue_voucher(&mut c, v, next_order);
            }
            match next_order {
                Some((next, next_id)) => self.queue.push(Scheduled {
                    t: next,
                    order_id: next_id,
                    customer: c,
                }),
                None => self.curve.add(&c),
            }
        }
    }

    /// With chance `p`, the next order (time and reserved id): an exponential gap after the
    /// outcome was felt, thinned by season and weekday, if it falls before the end.
    fn next_order(&mut self, c: &Customer, p: f64, t: i64, felt: i64) -> Option<(i64, i64)> {
        if !self.rng.random_bool(p.clamp(0.0, 1.0)) {
            return None;
        }
        if let Some((rate, _)) = c.purchase {
            let gap_days = Exp::new(rate).expect("positive rate").sample(&mut self.rng);
            let next = t + (gap_days * MICROS_PER_DAY as f64).min(i64::MAX as f64 / 4.0) as i64 + 1;
            return (next < self.end_micros).then(|| (next, self.id(Table::Orders)));
        }
        let mean = CHANNELS[usize::from(c.channel)].3;
        let mut next = felt.max(t);
        loop {
            let gap_days = -mean * (1.0 - self.rng.random::<f64>()).ln();
            next += (gap_days * MICROS_PER_DAY as f64) as i64 + 1;
            if self.rng.random::<f64>() * MAX_DAY_WEIGHT <= day_weight(day_of(next)) {
                break;
            }
        }
        if next < self.end_micros {
            Some((next, self.id(Table::Orders)))
        } else {
            None
        }
    }

    /// Marketing spend of the programs running on `day`: drawn by shard 0 alone, since it
    /// belongs to no customer.
    pub(super) fn spend_marketing(&mut self, day: i64) {
        if self.shard.index != 0 {
            return;
        }
        for pi in 1..self.programs.len() {
            let (from, to) = self.program_days[pi];
            if day < from || day > to || self.programs[pi].kind == "recovery" {
                continue;
            }
            let id = self.id(Table::MarketingSpend);
            let amount = self.rng.random_range(300i128..1_500);
            let channel = ["email", "push", "paid_social"][self.rng.random_range(0..3)];
            let pid = self.programs[pi].program_id;
            *self
                .spend_by_month
                .entry((pi, month_key(date_of_day(day))))
                .or_default() += amount;
            let landed = self.emit(
                Table::MarketingSpend,
                day * MICROS_PER_DAY,
                [
                    V::I(id),
                    V::I(pid),
                    V::S(channel),
                    V::D(day as i32),
                    V::M(amount),
                ],
            );
            self.tallies.add(landed, Tally::Spend(pi), amount);
        }
    }

    /// Close `day`, the open day: its rows, to write now.
    pub(super) fn close_day(&mut self, day: i64) -> Day {
        assert_eq!(day, self.open_day, "days close in order");
        self.open_day = day + 1;
        let closed = self.pending.pop_front().unwrap_or_default();
        self.day_rows = closed.lens();
        closed
    }

    /// This shard's part of the truth as of the end of `through_day`, to take once that day is
    /// closed: the groups tallied so far, the totals of the rows landed up to it, and the
    /// retention of every customer so far, finished or not.
    pub(super) fn tally(&self) -> TruthTally {
        debug_assert!(
            self.open_day > self.through_day,
            "taken after the day closed"
        );
        let mut curve = self.curve.clone();
        for c in self.queue.customers() {
            curve.add(c);
        }
        TruthTally {
            groups: self.truth.clone(),
            totals: self.tallies.through(self.through_day),
            curve,
        }
    }

    /// The spend per program and month over the whole period, for the finance tables.
    pub(super) fn finish(self) -> MonthlySpend {
        assert!(
            self.queue.is_empty(),
            "every scheduled order falls before the end"
        );
        assert!(
            self.pending.is_empty(),
            "rows land on the last day at the latest, so closing it wrote them all"
        );
        self.spend_by_month
    }

    // -----------------------------------------------------------------------------------------
    // One order.
    // -----------------------------------------------------------------------------------------

    /// Place order `order_id` for `c` at `t` with everything that follows it. Returns the chance
    /// the customer orders again, when the order's outcome was felt (the next order, if any, comes
    /// after it), and the vouchers the order earns.
    fn order(
        &mut self,
        c: &mut Customer,
        t: i64,
        order_id: i64,
    ) -> (f64, i64, Vec<PlannedVoucher>) {
        let (_, _, base, _) = CHANNELS[usize::from(c.channel)];
        let cancelled = c.purchase.is_none() && self.rng.random_bool(CANCEL_RATE);
        let first_completed = !cancelled && c.first_order_day.is_none();
        if !cancelled {
            c.mark_active(day_of(t));
        }
        let net = self.basket(c, t, order_id, cancelled);
        self.sessions(c.id, t, order_id);
        if cancelled {
            return (base, t, Vec::new());
        }
        let shipment = self.ship(order_id, t);
        // Other issues, only on orders delivered on time.
        let issue = match shipment.issue {
            Issue::None => self.other_issue(),
            delivery => delivery,
        };
        let felt = self.consequences(c.id, order_id, issue, net, &shipment);
        self.review(c.id, order_id, issue, &shipment);
        let (mut p, compensated, mut vouchers) = self.recovery(base, issue, felt);
        let touched = self.target_programs(c.id, t, &mut p, &mut vouchers);
        self.record_truth(t, issue, first_completed, compensated, p, &touched);
        (p, felt, vouchers)
    }

    /// The order row: basket (log-normal, median about 35.00, heavy right tail), shipping fee
    /// and the voucher it redeems. Returns the net amount paid.
    fn basket(&mut self, c: &mut Customer, t: i64, order_id: i64, cancelled: bool) -> i128 {
        let z: f64 = (0..6).map(|_| self.rng.random::<f64>()).sum::<f64>() - 3.0;
        let gmv = ((35.0 * (0.8 * z).exp()).max(1.0) * 100.0).round() as i128;
        let fee: i128 = if gmv >= 4000 { 0 } else { 399 };
        let (mut discount, mut voucher_id) = (0i128, None);
        if let Some((vid, face)) = c.redeem.take() {
            discount = i128::from(face).min(gmv);
            voucher_id = Some(vid);
        }
        let category = CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
        let landed = self.emit(
            Table::Orders,
            t,
            [
                V::I(order_id),
                V::I(c.id),
                V::T(t),
                V::S(REGIONS[usize::from(c.region)]),
                V::S(category),
                V::M(gmv),
                V::M(discount),
                V::M(fee),
                V::OptI(voucher_id),
                V::S(if cancelled { "cancelled" } else { "completed" }),
            ],
        );
        self.tallies.add(landed, Tally::Gmv, gmv);
        gmv - discount
    }

    /// The session that converted into the order, and a few that did not.
    fn sessions(&mut self, customer: i64, t: i64, order_id: i64) {
        let source = pick(&mut self.rng, &TRAFFIC);
        let sid = self.id(Table::Sessions);
        let session_ts = t - uniform_micros(&mut self.rng, 0.02, 1.0);
        self.emit(
            Table::Sessions,
            session_ts,
            [
                V::I(sid),
                V::OptI(Some(customer)),
                V::T(session_ts),
                V::S(source),
                V::OptI(Some(order_id)),
            ],
        );
        let browsing = self.rng.random_range(0..4);
        for _ in 0..browsing {
            let sid = self.id(Table::Sessions);
            let source = pick(&mut self.rng, &TRAFFIC);
            let anonymous = self.rng.random_bool(0.3);
            let at = t - uniform_micros(&mut self.rng, 0.0, 20.0);
            self.emit(
                Table::Sessions,
                at,
                [
                    V::I(sid),
                    V::OptI((!anonymous).then_some(customer)),
                    V::T(at),
                    V::S(source),
                    V::OptI(None),
                ],
            );
        }
    }

    /// The shipment: a carrier, and a parcel delivered on time, late, or lost.
    fn ship(&mut self, order_id: i64, t: i64) -> Shipment {
        let carrier = self.rng.random_range(0..CARRIERS.len());
        let (carrier_name, late_rate, lost_rate) = CARRIERS[carrier];
        let shipped = t + uniform_micros(&mut self.rng, 2.0, 36.0);
        let promised = shipped + 3 * MICROS_PER_DAY;
        let u: f64 = self.rng.random();
        let issue = if u < lost_rate {
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
            Table::Shipments,
            shipped,
            [
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
        Shipment {
            issue,
            promised,
            delivered,
        }
    }

    /// The issue of an order delivered on time, exclusive, so the primary issue is the one drawn
    /// (priority order lost > returned > refunded > late > contact > low rating).
    fn other_issue(&mut self) -> Issue {
        let mut u: f64 = self.rng.random();
        for (candidate, rate) in ISSUE_RATES {
            if u < rate {
                return candidate;
            }
            u -= rate;
        }
        Issue::None
    }

    /// The events that follow the order's issue. Returns when the customer felt the issue (a
    /// voucher may follow within 7 days of it).
    fn consequences(
        &mut self,
        customer: i64,
        order_id: i64,
        issue: Issue,
        net: i128,
        shipment: &Shipment,
    ) -> i64 {
        let promised = shipment.promised;
        let arrived = shipment.delivered.unwrap_or(promised);
        match issue {
            Issue::LostParcel => {
                let at = promised + uniform_micros(&mut self.rng, 24.0, 120.0);
                self.refund(order_id, at, net, "lost_parcel");
                if self.rng.random_bool(0.7) {
                    let at = promised + uniform_micros(&mut self.rng, 1.0, 48.0);
                    self.ticket(customer, Some(order_id), at, "delivery");
                }
                promised
            }
            Issue::LateDelivery => {
                if self.rng.random_bool(0.3) {
                    let at = promised + uniform_micros(&mut self.rng, 1.0, 100.0);
                    self.ticket(customer, Some(order_id), at, "delivery");
                }
                promised
            }
            Issue::Returned => self.return_order(order_id, arrived, net),
            Issue::Refunded => self.partial_refund(order_id, arrived, net),
            Issue::SupportContact => {
                let at = arrived + uniform_micros(&mut self.rng, 1.0, 24.0 * 10.0);
                self.ticket(customer, Some(order_id), at, "product_question");
                at
            }
            Issue::LowRating => {
                let at = arrived + uniform_micros(&mut self.rng, 12.0, 24.0 * 7.0);
                let rating = self.rng.random_range(1..=2);
                self.emit(
                    Table::Reviews,
                    at,
                    [V::I(order_id), V::I(customer), V::T(at), V::I32(rating)],
                );
                at
            }
            Issue::None => arrived,
        }
    }

    /// A return requested after arrival, received, then refunded in full. Returns the request.
    fn return_order(&mut self, order_id: i64, arrived: i64, net: i128) -> i64 {
        let requested = arrived + uniform_micros(&mut self.rng, 24.0, 24.0 * 14.0);
        let received = requested + uniform_micros(&mut self.rng, 48.0, 24.0 * 7.0);
        let rid = self.id(Table::Returns);
        self.emit(
            Table::Returns,
            requested,
            [
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

    /// A partial refund for a damaged or missing item. Returns its time.
    fn partial_refund(&mut self, order_id: i64, arrived: i64, net: i128) -> i64 {
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

    /// 30% of delivered orders without a low rating get a review (4-5 stars without issue).
    fn review(&mut self, customer: i64, order_id: i64, issue: Issue, shipment: &Shipment) {
        if issue == Issue::LowRating || shipment.delivered.is_none() || !self.rng.random_bool(0.3) {
            return;
        }
        let arrived = shipment.delivered.unwrap_or(shipment.promised);
        let at = arrived + uniform_micros(&mut self.rng, 12.0, 24.0 * 7.0);
        let rating = if issue == Issue::None {
            self.rng.random_range(4..=5)
        } else {
            self.rng.random_range(3..=4)
        };
        self.emit(
            Table::Reviews,
            at,
            [V::I(order_id), V::I(customer), V::T(at), V::I32(rating)],
        );
    }

    /// The chance of ordering again after `issue`: half the bad experiences get a recovery
    /// voucher within 7 days of the issue, which restores part of the lost chance. Returns the
    /// chance, whether the order was compensated, and the voucher.
    fn recovery(&mut self, base: f64, issue: Issue, felt: i64) -> (f64, bool, Vec<PlannedVoucher>) {
        let m = issue.return_multiplier();
        if issue == Issue::None || !self.rng.random_bool(VOUCHER_RATE) {
            return (base * m, false, Vec::new());
        }
        let at = felt + uniform_micros(&mut self.rng, 1.0, 24.0 * 6.5);
        let face = [500i128, 1000, 1500][self.rng.random_range(0..3)];
        let voucher = PlannedVoucher {
            program: 0,
            at,
            face,
            reason: "service_recovery",
        };
        (
            base * (m + (1.0 - m) * VOUCHER_RESTORE),
            true,
            vec![voucher],
        )
    }

    /// Retention programs running on the order day target some customers: a touch within a day
    /// of the order (before its outcome is felt, so before any next order); treated customers get
    /// the uplift on `p` and the program's voucher.
    fn target_programs(
        &mut self,
        customer: i64,
        t: i64,
        p: &mut f64,
        vouchers: &mut Vec<PlannedVoucher>,
    ) -> Vec<Touch> {
        let order_day = day_of(t);
        let mut touched = Vec::new();
        for pi in 1..self.programs.len() {
            let (from, to) = self.program_days[pi];
            // The program's numbers, copied: the rows below borrow the simulation mutably.
            let ProgramTruth {
                program_id,
                target_rate,
                holdout_share,
                uplift,
                voucher_cents,
                ..
            } = self.programs[pi];
            if order_day < from || order_day > to || !self.rng.random_bool(target_rate) {
                continue;
            }
            let holdout = self.rng.random_bool(holdout_share);
            let at = t + uniform_micros(&mut self.rng, 1.0, 20.0);
            if at >= self.end_micros {
                continue;
            }
            let landed = self.emit(
                Table::Touches,
                at,
                [V::I(customer), V::I(program_id), V::T(at), V::B(holdout)],
            );
            touched.push((program_id, holdout, at));
            if holdout {
                self.tallies.add(landed, Tally::Holdout(pi), 1);
                continue;
            }
            self.tallies.add(landed, Tally::Treated(pi), 1);
            *p = (*p + uplift).min(0.97);
            if voucher_cents > 0 {
                vouchers.push(PlannedVoucher {
                    program: pi,
                    at,
                    face: voucher_cents as i128,
                    reason: "retention_offer",
                });
            }
        }
        touched
    }

    /// Truth tallies of a completed order placed at `t`: settled orders by issue, and the chance
    /// of ordering again `p` each case was given, in the groups it belongs to.
    fn record_truth(
        &mut self,
        t: i64,
        issue: Issue,
        first_completed: bool,
        compensated: bool,
        p: f64,
        touched: &[Touch],
    ) {
        let end = self.through_end;
        let long_enough = |at: i64, days: i64| (end - at) / MICROS_PER_DAY >= days;
        let truth = &mut self.truth;
        let key = &mut self.group_key;
        if long_enough(t, SETTLED_DAYS) {
            *group(&mut truth.orders_by_issue, issue.name()) += 1;
        }
        if first_completed && long_enough(t, OBSERVED_DAYS) {
            group(&mut truth.first_order_groups, issue.name()).add(p);
        }
        if issue != Issue::None && long_enough(t, OBSERVED_DAYS + SETTLED_DAYS) {
            let kind = if compensated {
                "compensated"
            } else {
                "uncompensated"
            };
            key.clear();
            let _ = write!(key, "{}/{kind}", issue.name());
            group(&mut truth.recovery_groups, key).add(p);
        }
        for &(program_id, holdout, at) in touched {
            if long_enough(at, OBSERVED_DAYS + SETTLED_DAYS) {
                let arm = if holdout { "holdout" } else { "treated" };
                key.clear();
                let _ = write!(key, "{program_id}/{arm}");
                group(&mut truth.program_groups, key).add(p);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Refunds, tickets, vouchers.
    // -----------------------------------------------------------------------------------------

    fn refund(&mut self, order_id: i64, at: i64, amount: i128, reason: &'static str) {
        if at >= self.end_micros {
            return;
        }
        let id = self.id(Table::Refunds);
        let landed = self.emit(
            Table::Refunds,
            at,
            [
                V::I(id),
                V::I(order_id),
                V::T(at),
                V::M(amount),
                V::S(reason),
            ],
        );
        self.tallies.add(landed, Tally::Refunds, amount);
    }

    fn ticket(&mut self, customer: i64, order: Option<i64>, at: i64, category: &'static str) {
        let id = self.id(Table::CsTickets);
        let resolved = self
            .rng
            .random_bool(0.95)
            .then(|| at + uniform_micros(&mut self.rng, 0.5, 72.0));
        let csat = self
            .rng
            .random_bool(0.7)
            .then(|| self.rng.random_range(1..=5));
        self.emit(
            Table::CsTickets,
            at,
            [
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
        let id = self.id(Table::Vouchers);
        let expires = v.at + 60 * MICROS_PER_DAY;
        let redeemed = match next {
            Some((n, order_id))
                if c.redeem.is_none() && v.at < n && n <= expires && self.rng.random_bool(0.85) =>
            {
                c.redeem = Some((
                    id,
                    i64::try_from(v.face).expect("a voucher's face fits cents in i64"),
                ));
                if self.programs[v.program].kind == "recovery" {
                    let month = month_key(date_of_day(day_of(v.at)));
                    *self.spend_by_month.entry((v.program, month)).or_default() += v.face;
                }
                Some(order_id)
            }
            _ => None,
        };
        let pid = self.programs[v.program].program_id;
        let landed = self.emit(
            Table::Vouchers,
            v.at,
            [
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
        let pi = v.program;
        self.tallies.add(landed, Tally::VouchersIssued(pi), 1);
        self.tallies
            .add(landed, Tally::VoucherValueIssued(pi), v.face);
        if redeemed.is_some() {
            self.tallies
                .add(landed, Tally::VoucherValueRedeemed(pi), v.face);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64, hour: i64, customer: i64, order_id: i64) -> Scheduled {
        Scheduled {
            t: day * MICROS_PER_DAY + hour * MICROS_PER_HOUR,
            order_id,
            customer: Customer {
                id: customer,
                channel: 0,
                region: 0,
                first_order_day: None,
                active_months: 0,
                redeem: None,
                purchase: None,
            },
        }
    }

    #[test]
    fn day_tallies_add_up_each_kind_through_a_day() {
        let mut tallies = DayTallies::new(100);
        tallies.add(Some(100), Tally::Gmv, 5);
        tallies.add(Some(102), Tally::Gmv, 7);
        tallies.add(Some(101), Tally::VoucherValueRedeemed(3), 11);
        tallies.add(Some(101), Tally::Spend(0), 13);
        tallies.add(None, Tally::Gmv, 1_000);
        tallies.add(Some(103), Tally::Refunds, 17);
        let through = |day| -> BTreeMap<Tally, i128> {
            let totals = tallies.through(day).into_iter();
            totals.filter(|(_, a)| *a != 0).collect()
        };
        let expect = |pairs: &[(Tally, i128)]| pairs.iter().copied().collect::<BTreeMap<_, _>>();
        assert_eq!(through(99), expect(&[]));
        assert_eq!(
            through(102),
            expect(&[
                (Tally::Gmv, 12),
                (Tally::Spend(0), 13),
                (Tally::VoucherValueRedeemed(3), 11)
            ])
        );
        assert_eq!(through(200)[&Tally::Refunds], 17);
        for pi in 0..4 {
            for t in [
                Tally::Spend(pi),
                Tally::Holdout(pi),
                Tally::VoucherValueRedeemed(pi),
            ] {
                assert_eq!(Tally::of_slot(t.slot()), t);
            }
        }
    }

    #[test]
    fn shards_split_each_day_and_never_share_an_id() {
        let shard = |index| Shard { index, count: 8 };
        // The first ids of shards 0, 1 and 7: residues 1, 2 and 0 modulo 8.
        assert_eq!(
            (1..=3).map(|n| shard(0).id(n)).collect::<Vec<_>>(),
            [1, 9, 17]
        );
        assert_eq!(
            (1..=3).map(|n| shard(1).id(n)).collect::<Vec<_>>(),
            [2, 10, 18]
        );
        assert_eq!(
            (1..=3).map(|n| shard(7).id(n)).collect::<Vec<_>>(),
            [8, 16, 24]
        );
        let mut ids: Vec<i64> = (0..8)
            .flat_map(|s| (1..=50).map(move |n| shard(s).id(n)))
            .collect();
        ids.sort();
        assert_eq!(ids, (1..=400).collect::<Vec<_>>());
        // A day's sign-ups: equal shares, the remainder to the shards from the day's turn on.
        let day = 20_000;
        let split = |n| (0..8).map(|s| shard(s).signups(day, n)).collect::<Vec<_>>();
        assert_eq!(day % 8, 0);
        assert_eq!(split(19), [3, 3, 3, 2, 2, 2, 2, 2]);
        assert_eq!(split(3), [1, 1, 1, 0, 0, 0, 0, 0]);
        let next_day = (0..8)
            .map(|s| shard(s).signups(day + 1, 3))
            .collect::<Vec<_>>();
        assert_eq!(next_day, [0, 1, 1, 1, 0, 0, 0, 0]);
        for n in 0..40 {
            for d in day..day + 8 {
                assert_eq!((0..8).map(|s| shard(s).signups(d, n)).sum::<u64>(), n);
                // The shards' ids are consecutive blocks covering the day's ids, in shard order.
                let ids: Vec<i64> = (0..8)
                    .flat_map(|s| shard(s).signup_ids(d, 101, n))
                    .collect();
                assert_eq!(ids, (101..101 + n as i64).collect::<Vec<_>>());
            }
        }
        assert_eq!(shard(2).signup_ids(day, 101, 19), 107..110);
    }

    /// (customer, order) of the orders `day` places, with `more` scheduled while it runs.
    fn placed(queue: &mut Schedule, day: i64, mut more: Vec<Scheduled>) -> Vec<(i64, i64)> {
        queue.open(day);
        let mut out = Vec::new();
        while let Some(s) = queue.pop() {
            out.push((s.customer.id, s.order_id));
            if let Some(next) = more.pop() {
                queue.push(next);
            }
        }
        out
    }

    #[test]
    fn the_schedule_places_each_day_by_time_then_larger_customer() {
        let mut queue = Schedule::new(100, 103);
        for s in [
            at(101, 5, 1, 10),
            at(100, 9, 2, 11),
            at(100, 9, 3, 12),
            at(100, 2, 4, 13),
        ] {
            queue.push(s);
        }
        assert_eq!(queue.customers().count(), 4);
        // An order scheduled while day 100 runs and falling on it is placed the same day.
        let day_100 = placed(&mut queue, 100, vec![at(102, 1, 5, 15), at(100, 10, 4, 14)]);
        assert_eq!(day_100, [(4, 13), (3, 12), (2, 11), (4, 14)]);
        assert_eq!(placed(&mut queue, 101, vec![]), [(1, 10)]);
        assert!(!queue.is_empty());
        assert_eq!(placed(&mut queue, 102, vec![]), [(5, 15)]);
        assert!(queue.is_empty());
    }
}
