//! A job's share of the engine's memory pool: every reservation the job's operators make passes
//! through it to the shared pool (so `memory_limit` still bounds the whole run), and it keeps what
//! the job holds and the most it ever held, its peak memory. A job retried because it ran out of
//! memory passes them through the sharing rules of engine/share_pool.rs first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::engine::share_pool::SharePool;

use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// One job's view of the shared pool, counting its own reservations.
#[derive(Debug)]
pub struct JobMemory {
    shared: Arc<dyn MemoryPool>,
    /// Set by [`JobMemory::share_spilling`]: the sharing rules in front of `shared`.
    sharing: OnceLock<SharePool>,
    held: AtomicUsize,
    peak: AtomicUsize,
}

impl JobMemory {
    /// A job's view of `shared`, holding nothing yet.
    pub fn over(shared: Arc<dyn MemoryPool>) -> Arc<JobMemory> {
        Arc::new(JobMemory {
            shared,
            sharing: OnceLock::new(),
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    /// From now on, the job's spilling operators share its memory (engine/share_pool.rs). Call it
    /// between attempts, when the job holds nothing.
    pub fn share_spilling(&self) {
        let _ = self.sharing.set(SharePool::over(self.shared.clone()));
    }

    /// Where reservations go: the sharing rules when set, else the shared pool.
    fn pool(&self) -> &dyn MemoryPool {
        match self.sharing.get() {
            Some(sharing) => sharing,
            None => self.shared.as_ref(),
        }
    }

    /// The most the job's operators held at once, in bytes.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn added(&self, bytes: usize) {
        let held = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(held, Ordering::Relaxed);
    }
}

impl std::fmt::Display for JobMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "a job's share ({} bytes, peak {}) of {}",
            self.held.load(Ordering::Relaxed),
            self.peak(),
            self.shared
        )
    }
}

impl MemoryPool for JobMemory {
    fn name(&self) -> &str {
        "JobMemory"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.pool().register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.pool().unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.pool().grow(reservation, additional);
        self.added(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.pool().shrink(reservation, shrink);
        self.held.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.pool().try_grow(reservation, additional)?;
        self.added(additional);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.shared.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.shared.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn the_peak_is_the_most_held_at_once_and_the_shared_limit_still_holds() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let memory = JobMemory::over(shared.clone());
        let job: Arc<dyn MemoryPool> = memory.clone();
        let a = MemoryConsumer::new("a").register(&job);
        let b = MemoryConsumer::new("b").register(&job);
        a.try_grow(300).unwrap();
        b.try_grow(500).unwrap();
        a.shrink(200);
        b.grow(100);
        // Held: 300, 800, 600, 700. Another job's 250 bytes make this one's next 100 too many.
        let other = MemoryConsumer::new("other").register(&shared);
        other.try_grow(250).unwrap();
        let err = a.try_grow(100).unwrap_err();
        assert!(err.to_string().contains("Resources exhausted"), "{err}");
        assert_eq!(shared.reserved(), 950);
        drop((a, b));
        assert_eq!(shared.reserved(), 250);
        assert_eq!(memory.peak(), 800);
    }
}
