//! The simulation split into customer shards: each shard simulates its own customers on its own
//! blocking thread, with its own random stream and ids, and the shards' days are put together in
//! shard order. The number of shards is fixed, so a seed gives the same lake on any machine.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::model::{GenerateOptions, MonthlySpend};
use super::raw::{Day, Rows};
use super::simulation::{Shard, Sim, TruthTally};
use crate::error::{Error, Result};

/// Customer shards of every generated lake. A constant, not the machine's cores: the lake a seed
/// gives depends on it. Eight keep a few cores busy beside the encoders.
pub(super) const SHARDS: u64 = 8;

/// Days a shard may simulate ahead of the writer.
const DAYS_AHEAD: usize = 4;

/// One simulated day of one shard, or of all of them put together.
pub(super) struct ShardDay {
    /// The customers who signed up that day, by shard.
    pub(super) customers: Vec<Rows>,
    /// The rows landing on the day.
    pub(super) rows: Day,
    /// The truth's tallies, on the day the truth is taken.
    pub(super) truth: Option<TruthTally>,
}

impl ShardDay {
    /// Put the next shard's same day after this one.
    fn append(&mut self, next: ShardDay) {
        self.customers.extend(next.customers);
        self.rows.append(next.rows);
        match (&mut self.truth, next.truth) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, theirs) => self.truth = theirs,
            (Some(_), None) => unreachable!("every shard takes the truth on the same day"),
        }
    }
}

enum Message {
    Day(Box<ShardDay>),
    /// The shard's spend per program and month over the whole period.
    Done(MonthlySpend),
}

/// The shards' simulations, running ahead of the writer that takes their days in order.
pub(super) struct Shards {
    days: Vec<mpsc::Receiver<Message>>,
    /// The threads simulating the shards.
    tasks: Vec<JoinHandle<()>>,
}

/// One shard's simulation and where its days go.
struct ShardSim {
    sim: Sim,
    days: mpsc::Sender<Message>,
}

impl Shards {
    /// Start every shard's simulation of `opts`' period `start_day..end_day`, with `signups[d]`
    /// sign-ups on day `start_day + d`, the truth taken as of `through_day`. The shards run on
    /// `threads` blocking threads (at most one per shard), each thread taking its shards' days
    /// in turn; the lake is the same whatever their number.
    pub(super) fn start(
        opts: &GenerateOptions,
        (start_day, end_day): (i64, i64),
        signups: &[u64],
        through_day: i64,
        threads: usize,
    ) -> Shards {
        let threads = threads.clamp(1, SHARDS as usize);
        let signups: Arc<[u64]> = signups.into();
        let mut days = Vec::new();
        let mut groups: Vec<Vec<ShardSim>> = (0..threads).map(|_| Vec::new()).collect();
        for index in 0..SHARDS {
            let shard = Shard {
                index,
                count: SHARDS,
            };
            let (tx, rx) = mpsc::channel(DAYS_AHEAD);
            groups[thread_of(index as usize, threads)].push(ShardSim {
                sim: Sim::new(opts, shard, (start_day, end_day), through_day),
                days: tx,
            });
            days.push(rx);
        }
        let tasks = groups
            .into_iter()
            .map(|group| {
                let signups = signups.clone();
                tokio::task::spawn_blocking(move || {
                    simulate(group, start_day, &signups, through_day)
                })
            })
            .collect();
        Shards { days, tasks }
    }

    /// The next day of every shard, put together in shard order.
    pub(super) async fn next_day(&mut self) -> Result<ShardDay> {
        let mut all: Option<ShardDay> = None;
        for i in 0..self.days.len() {
            let Some(Message::Day(day)) = self.days[i].recv().await else {
                return Err(self.failure(i).await);
            };
            match &mut all {
                Some(all) => all.append(*day),
                None => all = Some(*day),
            }
        }
        Ok(all.expect("at least one shard"))
    }

    /// The spend per program and month over the whole period, summed over the shards, once
    /// every day has been taken.
    pub(super) async fn finish(mut self) -> Result<MonthlySpend> {
        let mut spend = MonthlySpend::new();
        for i in 0..self.days.len() {
            let Some(Message::Done(more)) = self.days[i].recv().await else {
                return Err(self.failure(i).await);
            };
            for (key, amount) in more {
                *spend.entry(key).or_default() += amount;
            }
        }
        Ok(spend)
    }

    /// Why shard `i` stopped early: its thread panicked (a bug).
    async fn failure(&mut self, i: usize) -> Error {
        let thread = thread_of(i, self.tasks.len());
        match (&mut self.tasks[thread]).await {
            Err(source) => Error::TaskPanicked { source },
            Ok(()) => unreachable!("a shard sends every day and its spend before it ends"),
        }
    }
}

/// The thread, of `threads`, that simulates shard `index`.
fn thread_of(index: usize, threads: usize) -> usize {
    index % threads
}

/// The simulations of `shards`, day by day, each shard's day sent as it closes; it stops early
/// when the writer has stopped taking days.
fn simulate(mut shards: Vec<ShardSim>, start_day: i64, signups: &[u64], through_day: i64) {
    let mut first_id = 1;
    for (d, &n) in signups.iter().enumerate() {
        let day = start_day + d as i64;
        for ShardSim { sim, days } in &mut shards {
            sim.sign_up(day, first_id, n);
            sim.orders_due(day);
            sim.spend_marketing(day);
            let closed = ShardDay {
                customers: vec![sim.take_customer_rows()],
                rows: sim.close_day(day),
                truth: (day == through_day).then(|| sim.tally()),
            };
            if days.blocking_send(Message::Day(Box::new(closed))).is_err() {
                return;
            }
        }
        first_id += n as i64;
    }
    for ShardSim { sim, days } in shards {
        let _ = days.blocking_send(Message::Done(sim.finish()));
    }
}
