//! Memory sharing for a job retried because it ran out of memory: within the run's pool, the job's
//! operators that cannot spill take memory first come, first served; those that can spill share
//! what is left between the ones that hold memory now, and keep a part of it free for the others.
//!
//! A job first runs under the run's pool as DataFusion gives it (greedy: whoever asks first gets
//! it), which is fastest while everything fits. DataFusion's greedy pool lets the first sorts of a large join take the whole pool, so an
//! aggregate or a merge that starts later fails although the sorts could have spilled. Its fair
//! pool divides the pool by every spill-capable operator registered, most of them idle, so each
//! active one spills in slivers. Here:
//! - a spilling operator's share is what the operators that cannot spill leave, divided by the
//!   spilling operators that hold memory at the moment; one above its share spills at its next
//!   request;
//! - spilling operators that hold memory leave free half of what the operators that cannot spill
//!   leave: a sort that did not spill merges its sorted runs through a reservation that cannot
//!   spill, about as large as the sort, and what is free stays at least what the spillers hold;
//! - a newcomer may start in that half, and any small reservation (a 32nd of the pool) grows while
//!   the pool has room, so an operator merging what it spilled is not refused for what it held.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::common::{human_readable_size, resources_datafusion_err};
use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// The fraction (1 / `RESERVE_DIVISOR`) of what the operators that cannot spill leave of the pool
/// that spilling operators leave free, once they hold any memory, for operators that cannot spill
/// and for newcomers. Of the pool less what cannot spill, not of the whole pool: a job whose hash
/// builds and held CTEs take half the pool must still let its aggregates and sorts work.
const RESERVE_DIVISOR: usize = 2;

/// The part of the pool (1 / `FLOOR_DIVISOR`) that any one reservation may hold whenever the pool
/// has room, whatever its consumer's share.
const FLOOR_DIVISOR: usize = 32;

/// A job's view of the run's pool (`inner`) that makes the job's spilling operators share it.
#[derive(Debug)]
pub struct SharePool {
    inner: Arc<dyn MemoryPool>,
    limit: usize,
    state: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// Bytes held by operators that cannot spill.
    unspillable: usize,
    /// Bytes held by each spill-capable consumer that holds any, by consumer id.
    spillers: HashMap<usize, usize>,
    /// The sum of `spillers`.
    spillable: usize,
}

impl SharePool {
    /// The sharing rules over `inner`, whose reservations (other jobs') count as taken.
    pub fn over(inner: Arc<dyn MemoryPool>) -> SharePool {
        let limit = match inner.memory_limit() {
            MemoryLimit::Finite(limit) => limit,
            MemoryLimit::Infinite | MemoryLimit::Unknown => usize::MAX,
        };
        SharePool {
            inner,
            limit,
            state: Mutex::new(Held::default()),
        }
    }

    /// What this job may use: the limit less what the rest of the run holds.
    fn available(&self, state: &Held) -> usize {
        let others = self
            .inner
            .reserved()
            .saturating_sub(state.unspillable + state.spillable);
        self.limit.saturating_sub(others)
    }

    /// The pool's state; a panic elsewhere while it was held leaves the counts usable.
    fn held(&self) -> MutexGuard<'_, Held> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a spill-capable consumer holding `held` in all, `in_reservation` of it in the
    /// reservation asking, may add `additional` bytes; if not, how much it may hold.
    ///
    /// A reservation below the floor grows while the pool has room: an operator past the point
    /// where it can spill (merging its spilled runs) asks through a small fresh reservation, and
    /// must not be refused for what its own earlier reservations hold.
    fn spiller_may_grow(
        &self,
        state: &Held,
        (held, in_reservation): (usize, usize),
        additional: usize,
    ) -> Result<(), usize> {
        let available = self.available(state);
        let free = available.saturating_sub(state.unspillable + state.spillable);
        if in_reservation + additional <= self.limit / FLOOR_DIVISOR {
            return if additional <= free {
                Ok(())
            } else {
                Err(free)
            };
        }
        // What the operators that cannot spill leave: the reserve and the shares come from it.
        let for_spillers = available.saturating_sub(state.unspillable);
        // A newcomer may use the reserve to start; the others spill down to their shares.
        let reserve = if held == 0 {
            0
        } else {
            for_spillers / RESERVE_DIVISOR
        };
        let holders = state.spillers.len() + usize::from(held == 0);
        let share = for_spillers / holders.max(1);
        if additional <= free.saturating_sub(reserve) && (held == 0 || held + additional <= share) {
            Ok(())
        } else {
            Err(share.min(held + free.saturating_sub(reserve)))
        }
    }
}

impl Held {
    fn add(&mut self, consumer: &MemoryConsumer, bytes: usize) {
        if bytes == 0 {
            return;
        }
        if consumer.can_spill() {
            *self.spillers.entry(consumer.id()).or_default() += bytes;
            self.spillable += bytes;
        } else {
            self.unspillable += bytes;
        }
    }

    fn remove(&mut self, consumer: &MemoryConsumer, bytes: usize) {
        if !consumer.can_spill() {
            self.unspillable = self.unspillable.saturating_sub(bytes);
            return;
        }
        self.spillable = self.spillable.saturating_sub(bytes);
        if let Some(held) = self.spillers.get_mut(&consumer.id()) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.spillers.remove(&consumer.id());
            }
        }
    }
}

impl MemoryPool for SharePool {
    fn name(&self) -> &str {
        "share"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.held().add(reservation.consumer(), additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
        self.held().remove(reservation.consumer(), shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let consumer = reservation.consumer();
        let mut state = self.held();
        let available = if consumer.can_spill() {
            let held = state.spillers.get(&consumer.id()).copied().unwrap_or(0);
            self.spiller_may_grow(&state, (held, reservation.size()), additional)
                .err()
        } else {
            let free = self
                .available(&state)
                .saturating_sub(state.unspillable + state.spillable);
            (additional > free).then_some(free)
        };
        if let Some(available) = available {
            drop(state); // the message shows the pool, which locks it again
            return Err(resources_datafusion_err!(
                "Failed to allocate additional {} for {} with {} already allocated for this \
                 reservation - {} remain available for it in the memory pool: {}",
                human_readable_size(additional),
                consumer.name(),
                human_readable_size(reservation.size()),
                human_readable_size(available),
                self
            ));
        }
        // The run's pool has the last word (another job may have taken memory since).
        self.inner.try_grow(reservation, additional)?;
        state.add(consumer, additional);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

impl fmt::Display for SharePool {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let state = self.held();
        write!(
            f,
            "share(the job holds {}, of which {} by {} spilling operators) over {}",
            human_readable_size(state.unspillable + state.spillable),
            human_readable_size(state.spillable),
            state.spillers.len(),
            self.inner
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    // A pool of 3,200 bytes: the floor is 100, and spillers holding memory leave 1,600 free.
    fn pool() -> Arc<dyn MemoryPool> {
        Arc::new(SharePool::over(Arc::new(GreedyMemoryPool::new(3200))))
    }

    fn spiller(pool: &Arc<dyn MemoryPool>, name: &str) -> MemoryReservation {
        MemoryConsumer::new(name)
            .with_can_spill(true)
            .register(pool)
    }

    #[test]
    fn a_lone_spiller_leaves_half_the_pool_to_operators_that_cannot_spill() {
        let pool = pool();
        let sort = spiller(&pool, "sort");
        sort.try_grow(1000).unwrap();
        sort.try_grow(600).unwrap();
        let err = sort.try_grow(101).unwrap_err().to_string();
        assert!(
            err.contains("Failed to allocate additional 101.0 B for sort"),
            "{err}"
        );
        // The merge of a sort that did not spill needs about what the sort holds.
        let merge = MemoryConsumer::new("merge").register(&pool);
        merge.try_grow(1600).unwrap();
        assert!(merge.try_grow(1).is_err());
        assert_eq!(pool.reserved(), 3200);
    }

    #[test]
    fn a_spiller_above_its_share_is_refused_while_a_smaller_one_grows() {
        let pool = pool();
        let (a, b, c) = (
            spiller(&pool, "a"),
            spiller(&pool, "b"),
            spiller(&pool, "c"),
        );
        a.try_grow(1000).unwrap();
        b.try_grow(150).unwrap();
        c.try_grow(150).unwrap();
        // Three hold memory: each share is 3200 / 3 = 1066. The pool has 300 to spare.
        assert!(a.try_grow(100).is_err());
        b.try_grow(200).unwrap();
        // When `a` has spilled, the two others share the pool.
        a.free();
        b.try_grow(250).unwrap();
        assert_eq!(pool.reserved(), 750);
    }

    #[test]
    fn a_newcomer_starts_in_the_reserve() {
        let pool = pool();
        let join = MemoryConsumer::new("join").register(&pool);
        join.try_grow(400).unwrap();
        let first = spiller(&pool, "first");
        first.try_grow(1200).unwrap();
        // The join holds 400: the spillers may hold half of the 2,800 it leaves.
        first.try_grow(200).unwrap();
        assert!(first.try_grow(1).is_err());
        // Nothing is left outside the reserve, but a spiller that holds nothing may start with
        // what is free.
        let second = spiller(&pool, "second");
        second.try_grow(1400).unwrap();
        assert!(second.try_grow(1).is_err());
        // What is free is free, even for a newcomer.
        let third = spiller(&pool, "third");
        assert!(third.try_grow(101).is_err());
    }

    #[test]
    fn a_small_reservation_grows_whatever_its_consumer_holds() {
        let pool = pool();
        let sort = spiller(&pool, "sort");
        sort.try_grow(1600).unwrap();
        assert!(sort.try_grow(101).is_err());
        // The same operator, merging what it spilled, asks through a fresh reservation.
        let merge = sort.new_empty();
        merge.try_grow(100).unwrap();
        assert!(merge.try_grow(1).is_err());
    }

    #[test]
    fn idle_spillers_do_not_divide_the_pool() {
        let pool = pool();
        let _idle: Vec<_> = (0..50)
            .map(|i| spiller(&pool, &format!("idle {i}")))
            .collect();
        let active = spiller(&pool, "active");
        active.try_grow(1500).unwrap();
        active.try_grow(100).unwrap();
        assert_eq!(pool.reserved(), 1600);
    }

    #[test]
    fn split_reservations_count_as_one_consumer() {
        let pool = pool();
        let sort = spiller(&pool, "sort");
        sort.try_grow(400).unwrap();
        let run = sort.split(300);
        drop(sort);
        // The consumer still holds the 300 of its split run.
        assert_eq!(pool.reserved(), 300);
        drop(run);
        assert_eq!(pool.reserved(), 0);
        let other = spiller(&pool, "other");
        other.try_grow(3200).unwrap();
    }
}
