//! The run's as-of day, what each job's `$as_of` is bound to: the day `--as-of` gives, else the
//! job's own `as_of` (`latest` by default, `today` for reports). `today` is the clock's UTC day
//! when the run starts; `latest` is the latest day of the project's `[as_of]` column (by default
//! the raw `orders.order_ts`), read once per run, after that table's job (if a job's) has run in it.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::catalog::TableProvider;
use tokio::sync::OnceCell;

use crate::engine::job::latest_day;
use crate::error::{Error, Result};
use crate::plan::workspace::{SourceProviders, Workspace};
use crate::project::spec::JobSpec;
use crate::store::delta;
use crate::values::AsOf;

/// The days of one run.
#[derive(Debug)]
pub struct RunDays {
    /// `--as-of`, for every job of the run.
    explicit: Option<AsOf>,
    today: NaiveDate,
    latest: OnceCell<Option<NaiveDate>>,
}

impl RunDays {
    pub fn new(explicit: Option<AsOf>, today: NaiveDate) -> RunDays {
        RunDays {
            explicit,
            today,
            latest: OnceCell::new(),
        }
    }

    /// The day bound to `spec`'s `$as_of`, which also ends an incremental job's intervals (`None`
    /// when the job neither reads it nor is incremental, or when `latest` finds no rows).
    pub async fn day_for(
        &self,
        ws: &Workspace,
        spec: &JobSpec,
        sources: &SourceProviders,
    ) -> Result<Option<NaiveDate>> {
        if !spec.uses_as_of && spec.incremental.is_none() {
            return Ok(None);
        }
        match self.explicit.unwrap_or(spec.as_of) {
            AsOf::Day(d) => Ok(Some(d)),
            AsOf::Today => Ok(Some(self.today)),
            AsOf::Latest => self
                .latest
                .get_or_try_init(|| resolve_latest(ws, sources))
                .await
                .copied(),
        }
    }
}

/// Read the latest day from the `[as_of]` table as it is now: a source (checked against its
/// contract) or a curated table at its latest version.
async fn resolve_latest(ws: &Workspace, sources: &SourceProviders) -> Result<Option<NaiveDate>> {
    let latest = &ws.engine.project.latest_day;
    let table = latest.table.clone();
    let provider: Arc<dyn TableProvider> = if ws.source(&table).is_some() {
        let opened = match sources.get(&table) {
            Some(p) => p.clone(),
            None => ws
                .source_providers([table.clone()])
                .await
                .remove(&table)
                .expect("a source"),
        };
        opened.map_err(|e| Error::Contract {
            table: table.clone(),
            message: format!("`latest` of {table}.{} is unknown: {e}", latest.column),
            source: None,
        })?
    } else {
        let Some(t) = delta::open(&ws.engine.stores, &ws.table_url(&table)?).await? else {
            return Err(Error::Storage {
                location: table.clone(),
                message: format!(
                    "`latest` is the latest {table}.{} but `{table}` has not been published yet; run it first, or pass --as-of YYYY-MM-DD",
                    latest.column
                ),
                source: None,
            });
        };
        delta::provider(&t).await?
    };
    let ctx = ws.engine.session(&[(table.clone(), provider)])?;
    let day = latest_day(&ctx, latest).await?;
    tracing::info!(table = %table, column = %latest.column, as_of = ?day, "as-of day `latest` resolved");
    Ok(day)
}
