//! What one query from a SQL client may use: a memory pool of its own, carved from nothing else
//! (a query past it fails with DataFusion's "resources exhausted"), and a deadline after which its
//! result stream ends with PostgreSQL's "canceling statement due to statement timeout".

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use futures::{Stream, StreamExt};
use tokio::time::Instant;

/// The limits every query of a SQL server runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Bytes one query's operators may hold (sorts, joins and aggregates spill or fail past it).
    pub memory: Option<usize>,
    /// How long a statement may run, planning and streaming included; a client's shorter
    /// `SET statement_timeout` wins.
    pub timeout: Duration,
}

/// The error a query's stream ends with when its deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("canceling statement due to statement timeout ({} s)", .0.as_secs_f64())]
pub struct StatementTimeout(pub Duration);

impl QueryLimits {
    /// A session for one query: `base`'s catalog, functions and settings, with a memory pool of
    /// its own.
    pub fn session(&self, base: &SessionContext) -> DfResult<SessionContext> {
        let Some(limit) = self.memory else {
            return Ok(SessionContext::new_with_state(base.state()));
        };
        let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
            GreedyMemoryPool::new(limit),
            std::num::NonZeroUsize::new(5).expect("non-zero"),
        ));
        let runtime = RuntimeEnvBuilder::from_runtime_env(base.runtime_env().as_ref())
            .with_memory_pool(pool)
            .build_arc()?;
        let state = SessionStateBuilder::new_from_existing(base.state())
            .with_runtime_env(runtime)
            .build();
        Ok(SessionContext::new_with_state(state))
    }

    /// This statement's timeout: the server's, or the client's `statement_timeout` when shorter.
    pub fn timeout(&self, client_timeout: Option<Duration>) -> Duration {
        client_timeout.map_or(self.timeout, |t| t.min(self.timeout))
    }
}

/// `stream`, ended with `StatementTimeout` at `deadline`; the query is dropped (cancelled) then.
pub fn with_deadline(
    stream: SendableRecordBatchStream,
    deadline: Instant,
    timeout: Duration,
) -> impl Stream<Item = DfResult<RecordBatch>> + Send {
    futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((Err(timeout_error(timeout)), None)),
        }
    })
}

/// The DataFusion error carrying `StatementTimeout`.
pub fn timeout_error(timeout: Duration) -> DataFusionError {
    DataFusionError::External(Box::new(StatementTimeout(timeout)))
}

/// The statement timeout `e` carries, if it is one (its text is the client's message).
pub fn statement_timeout(e: &DataFusionError) -> Option<&StatementTimeout> {
    match e.find_root() {
        DataFusionError::External(inner) => inner.downcast_ref::<StatementTimeout>(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    #[tokio::test]
    async fn a_query_past_its_memory_fails_with_resources_exhausted() {
        let base = SessionContext::new();
        let limits = QueryLimits {
            memory: Some(256 * 1024),
            timeout: Duration::from_secs(60),
        };
        let ctx = limits.session(&base).unwrap();
        let sql = "SELECT v % 100003 AS k, count(*) FROM generate_series(1, 2000000) AS t(v) GROUP BY k ORDER BY k";
        let e = ctx.sql(sql).await.unwrap().collect().await.unwrap_err();
        assert!(
            matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{e}"
        );
        // The base session has no such limit.
        assert_eq!(base.sql(sql).await.unwrap().count().await.unwrap(), 100003);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_past_its_deadline_ends_with_the_timeout_error() {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::empty());
        let slow = futures::stream::unfold(0, |n| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let batch =
                RecordBatch::new_empty(Arc::new(datafusion::arrow::datatypes::Schema::empty()));
            Some((Ok(batch), n + 1))
        });
        let stream: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(schema, slow));
        let timeout = Duration::from_millis(2500);
        let items: Vec<_> = with_deadline(stream, Instant::now() + timeout, timeout)
            .collect()
            .await;
        assert_eq!(items.len(), 3, "two batches, then the error");
        let e = items[2].as_ref().unwrap_err();
        assert!(statement_timeout(e).is_some());
        assert_eq!(
            e.find_root().to_string(),
            "External error: canceling statement due to statement timeout (2.5 s)"
        );
        let limits = QueryLimits {
            memory: None,
            timeout: Duration::from_secs(30),
        };
        assert_eq!(
            limits.timeout(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            limits.timeout(Some(Duration::from_secs(50))),
            Duration::from_secs(30)
        );
        assert_eq!(limits.timeout(None), Duration::from_secs(30));
    }
}
