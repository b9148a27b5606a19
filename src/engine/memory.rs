//! A job's share of the engine's memory pool: every reservation the job's operators make passes
//! through it to the shared pool (so `memory_limit` still bounds the whole run), and it keeps what
//! the job holds and the most it ever held, its peak memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// One job's view of the shared pool, counting its own reservations.
#[derive(Debug)]
pub struct JobMemory {
    shared: Arc<dyn MemoryPool>,
    held: AtomicUsize,
    peak: AtomicUsize,
}

impl JobMemory {
    /// A job's view of `shared`, holding nothing yet.
    pub fn over(shared: Arc<dyn MemoryPool>) -> Arc<JobMemory> {
        Arc::new(JobMemory {
            shared,
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
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
        self.shared.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.added(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.held.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.shared.try_grow(reservation, additional)?;
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
