//! One job of a run: its inputs opened (sources contract-checked, curated tables at their latest
//! version, close tables empty until first written), its SQL planned, checks run on the whole
//! result when it has any, and the result published in one Delta commit.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, ident, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionContext};

use crate::engine::checks::run_checks;
use crate::engine::job::date_value;
use crate::engine::memory::{JobMemory, MemoryPlan, PlanEstimate, limit_bytes};
use crate::error::{Error, Result};
use crate::execute::as_of::RunDays;
use crate::execute::kept::{Capture, KeptTables, writes_whole_table};
use crate::execute::publish::{
    PreparedPlan, QueryFailure, distinct_partitions, in_file_order, leaf_metrics,
};
use crate::ledger;
use crate::plan::graph::Input;
use crate::plan::run_plan::{PlannedJob, RunPlan, SlotClaim};
use crate::plan::workspace::{SourceProviders, Workspace};
use crate::project::incremental::{Grain, Incremental, Range, Work};
use crate::project::spec::{JobSpec, WriteMode};
use crate::store::delta;
use crate::store::lease::Leases;
use crate::store::system::{
    CLOSE_LOG, CLOSED_MONTHS, empty_until_written, fixed_schema, is_snapshot_table,
};

/// A job's executed plan (for its metrics) and what its commit wrote.
type Published = (Arc<dyn ExecutionPlan>, delta::Published);

/// What a job that succeeded did.
pub struct JobDone {
    pub rows_read: i64,
    /// What the job's operators wrote to spill files.
    pub spilled_bytes: i64,
    pub rows_written: i64,
    pub bytes_read: i64,
    pub version: i64,
    /// JSON object: input table -> Delta version (curated) or `"source"`.
    pub input_versions: String,
    /// The day `$as_of` was bound to.
    pub as_of: Option<chrono::NaiveDate>,
    /// For an incremental job: the days it computed.
    pub interval: Option<Range>,
    /// The memory plan it succeeded with.
    pub memory_plan: MemoryPlan,
}

/// A job's inputs registered by table name, and the version each was read at.
struct OpenedInputs {
    tables: Vec<(String, Arc<dyn TableProvider>)>,
    versions: serde_json::Map<String, serde_json::Value>,
}

/// Run one job: register its inputs, plan its SQL, publish the result in one Delta commit. It
/// starts with the `start` memory plan; with the default one, a job that runs out of memory runs
/// again with the spilling plan.
pub async fn run_job(
    ws: &Workspace,
    job: &PlannedJob,
    sources: &SourceProviders,
    plan: &RunPlan,
    days: &RunDays,
    (memory, start): (&Arc<JobMemory>, MemoryPlan),
    kept: &KeptTables,
) -> Result<JobDone> {
    let (run_id, claim) = (plan.run_id.as_str(), plan.claim.as_ref());
    let spec = &ws.graph.node(&job.name).expect("planned from graph").spec;
    let engine_err = |source| Error::JobEngine {
        job: job.name.clone(),
        source,
    };
    let started = std::time::Instant::now();
    let inputs = open_inputs(ws, job, sources, kept).await?;
    let opened = started.elapsed();
    let as_of = days
        .day_for(ws, spec, sources)
        .await
        .map_err(|e| Error::JobAsOf {
            job: job.name.clone(),
            source: Box::new(e),
        })?;
    let work = match (plan.interval, &spec.incremental) {
        (Some(range), Some(_)) => Some(Work::Intervals(range)),
        _ => incremental_work(ws, job, spec, as_of, plan.forward_only).await?,
    };
    tracing::debug!(job = %job.name, open_seconds = opened.as_secs_f64(),
        as_of_seconds = (started.elapsed() - opened).as_secs_f64(), "inputs opened");
    let attempt = JobAttempt {
        ws,
        job,
        spec,
        as_of,
        work,
        run_id,
        claim,
        kept,
    };
    let first = match start {
        MemoryPlan::Default => attempt.with_defaults(&inputs, memory).await?,
        MemoryPlan::Spilling => {
            tracing::info!(
                job = %job.name,
                "starting with the spilling plan: the job's last run under this memory limit needed it"
            );
            None
        }
    };
    let (memory_plan, (physical, published)) = match first {
        Some(done) => (MemoryPlan::Default, done),
        None => (
            MemoryPlan::Spilling,
            attempt.spilling(&inputs, memory).await?,
        ),
    };
    let physical = crate::engine::cluster::with_worker_metrics(physical)
        .await
        .map_err(engine_err)?;
    crate::engine::profile::log_executed(&job.name, &physical);
    let (rows_read, bytes_read) = leaf_metrics(&physical);
    Ok(JobDone {
        spilled_bytes: crate::engine::memory::spilled_bytes(&physical) as i64,
        rows_read,
        rows_written: published.rows_written,
        bytes_read,
        version: published.version,
        input_versions: serde_json::Value::Object(inputs.versions).to_string(),
        as_of,
        interval: work.map(|w| w.range()),
        memory_plan,
    })
}

/// One planning and publishing of a job's result, which a job that ran out of memory repeats with
/// other settings.
#[derive(Clone, Copy)]
struct JobAttempt<'a> {
    ws: &'a Workspace,
    job: &'a PlannedJob,
    spec: &'a JobSpec,
    as_of: Option<chrono::NaiveDate>,
    work: Option<Work>,
    run_id: &'a str,
    claim: Option<&'a SlotClaim>,
    /// Where the run keeps the published table for its later readers.
    kept: &'a KeptTables,
}

impl JobAttempt<'_> {
    /// Publish with DataFusion's defaults; `None` when the job ran out of memory (nothing was
    /// published) or was not run because its plan would not fit: it reads more than the memory
    /// limit, or the build sides of its hash joins, which cannot spill, or its largest sort,
    /// whose merge cannot, would take more than half of it; all estimated from the planner's
    /// statistics (`memory::PlanEstimate`).
    async fn with_defaults(
        self,
        inputs: &OpenedInputs,
        memory: &Arc<JobMemory>,
    ) -> Result<Option<Published>> {
        let ws = self.ws;
        let ctx = ws.engine.job_session(&inputs.tables, memory)?;
        let planned = self.plan(&ctx).await?;
        let PlanEstimate {
            input_bytes: input,
            hash_join_build_bytes: build,
            sort_input_bytes: sort,
        } = PlanEstimate::of(&planned.1);
        let limit = limit_bytes(ws.engine.runtime.memory_pool.as_ref());
        tracing::debug!(job = %self.job.name, hash_join_build_bytes = build, input_bytes = input,
            sort_input_bytes = sort, memory_limit_bytes = limit, "memory estimate");
        let half = |l: &i64| build.max(sort) as i64 > l / 2;
        if let Some(limit) = limit.filter(|l| half(l) || input as i64 > *l) {
            tracing::info!(
                job = %self.job.name,
                hash_join_build_bytes = build,
                input_bytes = input,
                sort_input_bytes = sort,
                memory_limit_bytes = limit,
                "starting with the spilling plan: its input is larger than the memory limit, or its hash joins' build sides or its largest sort would take more than half of it"
            );
            return Ok(None);
        }
        let result = self.publish(&ctx, planned).await;
        drop(ctx); // its materialized CTEs hold memory until then
        match result {
            Ok(done) => Ok(Some(done)),
            Err(e) if e.is_out_of_memory() => {
                // Hash joins, whose build side cannot spill, and a pool where the first operator
                // to ask takes it all.
                tracing::warn!(
                    job = %self.job.name,
                    error = %e,
                    "out of memory; running the job again with sort-merge joins and shared memory"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Publish with the spilling memory plan.
    async fn spilling(self, inputs: &OpenedInputs, memory: &Arc<JobMemory>) -> Result<Published> {
        let ctx = self
            .ws
            .engine
            .spilling_job_session(&inputs.tables, memory)?;
        let planned = self.plan(&ctx).await?;
        self.publish(&ctx, planned).await
    }

    /// The job's SQL planned in `ctx`, logically and physically.
    async fn plan(self, ctx: &SessionContext) -> Result<(DataFrame, Arc<dyn ExecutionPlan>)> {
        let range = self.work.map(|w| w.range());
        let started = std::time::Instant::now();
        let df = self
            .ws
            .engine
            .plan_job(ctx, self.spec, self.as_of, range)
            .await?;
        let logical = started.elapsed();
        let physical =
            df.clone()
                .create_physical_plan()
                .await
                .map_err(|source| Error::JobEngine {
                    job: self.job.name.clone(),
                    source,
                })?;
        tracing::debug!(job = %self.job.name, logical_seconds = logical.as_secs_f64(),
            physical_seconds = (started.elapsed() - logical).as_secs_f64(), "job planned");
        Ok((df, physical))
    }

    /// Run the job's planned SQL in `ctx`, check its result and publish it in one Delta commit;
    /// returns the executed plan (for its metrics) and what the commit wrote.
    async fn publish(
        self,
        ctx: &SessionContext,
        (df, physical): (DataFrame, Arc<dyn ExecutionPlan>),
    ) -> Result<Published> {
        let JobAttempt {
            ws,
            job,
            spec,
            as_of,
            work,
            run_id,
            claim,
            kept,
        } = self;
        let engine_err = |source| Error::JobEngine {
            job: job.name.clone(),
            source,
        };
        let replace_where = match (work, &spec.incremental) {
            (Some(Work::Intervals(range)), Some(inc)) => {
                Some(interval_predicate(inc, df.schema().inner(), range))
            }
            _ => None,
        };
        let partitions = if spec.mode == WriteMode::OverwritePartitions {
            distinct_partitions(df.clone(), &spec.partition_by)
                .await
                .map_err(engine_err)?
        } else {
            vec![]
        };
        let whole = writes_whole_table(spec, replace_where.is_some());
        let capture = kept.capture(&job.table, whole);
        let (logical, failure, known_bytes) =
            checked_result(ctx, (spec, job), physical.clone(), as_of, capture.clone()).await?;
        if let Some(claim) = claim {
            Leases::new(&ws.engine.stores, &ws.engine.project.curated)?
                .check(&claim.lease, ws.engine.clock.now())
                .await?;
        }
        let writing = std::time::Instant::now();
        // The writer runs here; only the job's query (already planned) runs on the workers.
        let mut writer = crate::engine::session::Engine::local_state(ctx);
        if !spec.file_layout.sort_by.is_empty() {
            // One sorted stream, written as it comes: not spread over writers round robin.
            let optimizer = &mut writer.config_mut().options_mut().optimizer;
            optimizer.enable_round_robin_repartition = false;
        }
        let published = delta::publish(
            &ws.engine.stores,
            Arc::new(writer),
            logical,
            delta::Publish {
                table: &job.table,
                url: &job.url,
                mode: spec.mode,
                partition_by: &spec.partition_by,
                partitions,
                description: &spec.description,
                configuration: table_properties(ws),
                commit_metadata: commit_metadata(run_id, &job.name, claim),
                base_version: claim.map(|c| c.base_version),
                replace_where,
                file_layout: &spec.file_layout,
                known_bytes,
            },
        )
        .await
        // The query itself failed (resources exhausted, a worker gone): say so, not how the writer
        // wrapped it.
        .map_err(|e| failure.take().map_or(e, engine_err))?;
        tracing::debug!(job = %job.name, write_seconds = writing.elapsed().as_secs_f64(), "result written");
        if let Some(capture) = capture {
            kept.keep(&job.table, published.version, capture);
        }
        Ok((physical, published))
    }
}

/// What an incremental job computes in this run: a rebuild the first time, after its SQL or spec
/// changed (unless `forward_only`) or when its table is missing, else the intervals not done plus
/// the lookback, through the interval holding the as-of day.
async fn incremental_work(
    ws: &Workspace,
    job: &PlannedJob,
    spec: &JobSpec,
    as_of: Option<chrono::NaiveDate>,
    forward_only: bool,
) -> Result<Option<Work>> {
    let Some(inc) = &spec.incremental else {
        return Ok(None);
    };
    let as_of = as_of.ok_or_else(|| Error::Job {
        job: job.name.clone(),
        message: "an incremental job needs an as-of day, and `latest` found no rows: pass --as-of YYYY-MM-DD".into(),
    })?;
    if !delta::has_log(&ws.engine.stores, &job.url).await? {
        return Ok(Some(inc.work(as_of, None)));
    }
    let runs = ledger::done_runs(&ws.engine, &ws.engine.project.curated, &job.name).await?;
    let current: Vec<Range> = runs
        .iter()
        .filter(|r| forward_only || r.spec_hash.as_deref() == Some(spec.spec_hash.as_str()))
        .map(|r| r.range)
        .collect();
    let done = (!current.is_empty()).then_some(current.as_slice());
    Ok(Some(inc.work(as_of, done)))
}

/// `time_column >= start AND time_column < end`, in the column's type: a DATE, or text by day
/// (`YYYY-MM-DD`) or month (`YYYY-MM`).
fn interval_predicate(
    inc: &Incremental,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    range: Range,
) -> Expr {
    use datafusion::arrow::datatypes::DataType;
    let is_date = schema
        .field_with_name(&inc.time_column)
        .is_ok_and(|f| f.data_type() == &DataType::Date32);
    let value = |d: chrono::NaiveDate| match (is_date, inc.grain) {
        (true, _) => lit(date_value(Some(d))),
        (false, Grain::Day) => lit(d.format("%Y-%m-%d").to_string()),
        (false, Grain::Month) => lit(d.format("%Y-%m").to_string()),
    };
    let column = ident(&inc.time_column);
    column
        .clone()
        .gt_eq(value(range.start))
        .and(column.lt(value(range.end)))
}

/// The plan Delta's writer reads: the result streamed straight through, or, when the job has
/// checks, the whole result collected and checked first (nothing is published if one fails), with
/// its size in memory.
async fn checked_result(
    ctx: &SessionContext,
    (spec, job): (&JobSpec, &PlannedJob),
    physical: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    as_of: Option<chrono::NaiveDate>,
    capture: Option<Capture>,
) -> Result<(LogicalPlan, QueryFailure, Option<usize>)> {
    let engine_err = |source| Error::JobEngine {
        job: job.name.clone(),
        source,
    };
    let failure = QueryFailure::default();
    let physical = in_file_order(physical, &spec.file_layout).map_err(engine_err)?;
    let (source, known_bytes): (Arc<dyn TableProvider>, _) = if spec.checks.is_empty() {
        let streamed = PreparedPlan {
            plan: physical,
            failure: failure.clone(),
            capture,
        };
        (Arc::new(streamed), None)
    } else {
        let started = std::time::Instant::now();
        let batches = datafusion::physical_plan::collect(physical.clone(), ctx.task_ctx())
            .await
            .map_err(engine_err)?;
        let collected = started.elapsed();
        if let Some(capture) = &capture {
            batches.iter().for_each(|b| capture.push(b));
        }
        let bytes = delta::rows_bytes(&batches);
        let result: Arc<dyn TableProvider> = Arc::new(datafusion::datasource::MemTable::try_new(
            physical.schema(),
            vec![batches],
        )?);
        ctx.register_table(spec.table.as_str(), result.clone())?;
        run_checks(ctx, spec, as_of).await?;
        tracing::debug!(job = %job.name, query_seconds = collected.as_secs_f64(),
            checks_seconds = (started.elapsed() - collected).as_secs_f64(), "result checked");
        (result, Some(bytes))
    };
    let plan = LogicalPlanBuilder::scan(job.table.as_str(), provider_as_source(source), None)
        .and_then(|b| b.build())
        .map_err(engine_err)?;
    Ok((plan, failure, known_bytes))
}

/// Open every input of `job`. The close log first: a close that commits while this job opens its
/// inputs is then either unseen (its frozen rows are ignored) or seen with everything it froze.
async fn open_inputs(
    ws: &Workspace,
    job: &PlannedJob,
    sources: &SourceProviders,
    kept: &KeptTables,
) -> Result<OpenedInputs> {
    let job_err = |message: String| Error::Job {
        job: job.name.clone(),
        message,
    };
    let mut opened = OpenedInputs {
        tables: Vec::new(),
        versions: serde_json::Map::new(),
    };
    let mut inputs: Vec<&Input> = job.inputs.iter().collect();
    inputs.sort_by_key(|i| *i != &Input::System(CLOSE_LOG.to_string()));
    for input in inputs {
        match input {
            // A view over `_month_close`, registered when the job is planned.
            Input::System(t) if t == CLOSED_MONTHS => {}
            Input::Source(name) => match sources.get(name) {
                Some(Ok(p)) => {
                    opened.tables.push((name.clone(), p.clone()));
                    opened.versions.insert(name.clone(), "source".into());
                }
                Some(Err(e)) => {
                    return Err(Error::JobInput {
                        job: job.name.clone(),
                        source: e.clone(),
                    });
                }
                None => return Err(job_err(format!("source `{name}` was not registered"))),
            },
            Input::Job { table, .. } | Input::System(table) => {
                let Some(t) = delta::open(&ws.engine.stores, &ws.table_url(table)?).await? else {
                    match missing_input(input, &job.name) {
                        Missing::Empty(schema) => {
                            opened
                                .tables
                                .push((table.clone(), Arc::new(EmptyTable::new(schema))));
                            opened.versions.insert(table.clone(), (-1).into());
                        }
                        Missing::Unread => {}
                        Missing::Fail(message) => return Err(job_err(message)),
                    }
                    continue;
                };
                let version = t.version().map(|v| v as i64).unwrap_or(-1);
                opened.versions.insert(table.clone(), version.into());
                // Workers read a curated table as its version's Parquet files.
                let provider = if ws.engine.is_distributed() {
                    crate::store::delta_files::provider(&t).await?
                } else {
                    let files = delta::provider(&t).await?;
                    // The version this run published, when it kept the rows it wrote.
                    kept.provider(table, version, &files.schema())
                        .unwrap_or(files)
                };
                opened.tables.push((table.clone(), provider));
            }
        }
    }
    Ok(opened)
}

/// What to do about an input table that was never published.
enum Missing {
    /// A close table that starts empty.
    Empty(datafusion::arrow::datatypes::SchemaRef),
    /// A snapshot table: only read once a month is closed, and then it exists.
    Unread,
    Fail(String),
}

fn missing_input(input: &Input, job: &str) -> Missing {
    match input {
        Input::System(name) if empty_until_written(name) => {
            Missing::Empty(fixed_schema(name).expect("fixed schema"))
        }
        Input::System(name) if is_snapshot_table(name) => Missing::Unread,
        Input::Job {
            job: upstream,
            table,
        } => Missing::Fail(format!(
            "input table `{table}` has not been published yet; run `retention run +{job}` to build it with its upstream (or `retention run {upstream}`)"
        )),
        other => Missing::Fail(format!(
            "input table `{}` does not exist yet",
            other.table()
        )),
    }
}

/// Table properties set when a curated table is created: how long its history is kept.
fn table_properties(ws: &Workspace) -> HashMap<String, Option<String>> {
    let project = &ws.engine.project;
    HashMap::from([
        (
            "delta.logRetentionDuration".to_string(),
            Some(format!("interval {} days", project.log_retention_days)),
        ),
        (
            "delta.deletedFileRetentionDuration".to_string(),
            Some(format!(
                "interval {} hours",
                project.deleted_file_retention_hours
            )),
        ),
        (
            "delta.checkpointInterval".to_string(),
            Some(delta::CHECKPOINT_INTERVAL.to_string()),
        ),
    ])
}

/// Stored with each commit: which run and job wrote it, and for a daemon's run the slot and the
/// lease token (how a takeover finds that the slot was already published).
fn commit_metadata(
    run_id: &str,
    job: &str,
    claim: Option<&SlotClaim>,
) -> HashMap<String, serde_json::Value> {
    let mut m = HashMap::from([
        (
            "retention.run_id".to_string(),
            serde_json::Value::from(run_id),
        ),
        ("retention.job".to_string(), serde_json::Value::from(job)),
    ]);
    if let Some(c) = claim {
        m.insert(
            delta::SLOT_KEY.to_string(),
            c.lease.slot.to_rfc3339().into(),
        );
        m.insert(delta::ATTEMPT_KEY.to_string(), c.lease.token.into());
    }
    m
}
