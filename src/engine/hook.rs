//! The small interface through which higher layers (month close) take part in planning without
//! the engine naming them: a hook prepares each session and may rewrite each job's output.

use async_trait::async_trait;
use datafusion::prelude::{DataFrame, SessionContext};

use crate::error::Result;
use crate::project::spec::JobSpec;

/// Called by the engine on every session it plans SQL in, and on every job's planned output.
#[async_trait]
pub trait SessionHook: Send + Sync {
    /// Register what SQL in `ctx` may read beyond its tables (views over registered tables).
    async fn prepare(&self, ctx: &SessionContext) -> Result<()>;

    /// The job's output as published: `df` as planned, or rewritten (closed months replaced by
    /// their frozen snapshots).
    async fn job_output(
        &self,
        ctx: &SessionContext,
        spec: &JobSpec,
        df: DataFrame,
    ) -> Result<DataFrame>;
}
