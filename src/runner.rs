//! Plans and runs jobs: the workspace (project, sources, job graph), a run plan that `--dry-run`
//! prints, and its execution in dependency order with bounded concurrency, publishing each result
//! to its curated table and recording every job in the run ledger.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::provider_as_source;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use tokio::task::JoinSet;
use tracing::Instrument;
use url::Url;

use crate::curated;
use crate::dag::{Graph, Input};
use crate::error::{Error, Result};
use crate::ledger::{self, RunRecord, Status};
use crate::session::{Engine, plan_job};
use crate::sources::{self, Source};
use crate::spec;

/// Everything loaded from the project's files, validated.
pub struct Workspace {
    pub engine: Engine,
    pub sources: Vec<Source>,
    pub graph: Graph,
}

impl Workspace {
    /// Load sources and job specs and build the job graph; all problems reported together.
    pub fn load(engine: Engine) -> Result<Workspace> {
        let jobs_dir = engine.project.jobs_dir();
        let sources = sources::load(&jobs_dir, &engine.project.raw);
        let specs = spec::load_all(&engine.project.root, &jobs_dir);
        let (sources, specs) = match (sources, specs) {
            (Ok(s), Ok(j)) => (s, j),
            (a, b) => {
                let errs = [a.err(), b.err()]
                    .into_iter()
                    .flatten()
                    .flat_map(flatten)
                    .collect();
                return Err(Error::Many(errs));
            }
        };
        // Project-wide parameters reach every job that does not set its own.
        let specs = specs
            .into_iter()
            .map(|mut s| {
                for (k, v) in &engine.project.params {
                    if !s.params.iter().any(|(n, _)| n == k) {
                        s.params.push((k.clone(), v.clone()));
                    }
                }
                s
            })
            .collect();
        let graph = Graph::build(specs, &sources)?;
        Ok(Workspace {
            engine,
            sources,
            graph,
        })
    }

    /// Override job parameters from the command line (`--param name=value`) for the selected
    /// jobs. The value is parsed as the type the spec gives the parameter.
    pub fn override_params(&mut self, selected: &[String], params: &[String]) -> Result<()> {
        let mut problems = Vec::new();
        for p in params {
            let Some((name, text)) = p.split_once('=') else {
                problems.push(Error::Config {
                    path: "--param".into(),
                    key: p.clone(),
                    message: "expected NAME=VALUE".into(),
                });
                continue;
            };
            let mut used = false;
            for node in self
                .graph
                .nodes
                .iter_mut()
                .filter(|n| selected.contains(&n.spec.name))
            {
                for (k, v) in node.spec.params.iter_mut().filter(|(k, _)| k == name) {
                    match spec::parse_param(v, text) {
                        Ok(parsed) => *v = parsed,
                        Err(e) => problems.push(Error::Config {
                            path: "--param".into(),
                            key: k.clone(),
                            message: format!("{e} (job `{}`)", node.spec.name),
                        }),
                    }
                    used = true;
                }
            }
            if !used {
                problems.push(Error::Config {
                    path: "--param".into(),
                    key: name.to_string(),
                    message: "no selected job declares this parameter in its [params]".into(),
                });
            }
        }
        Error::from_many(problems)
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Location of a curated table.
    pub fn table_url(&self, table: &str) -> Result<Url> {
        curated::table_url(&self.engine.project.curated, table)
    }

    /// Plan every job against schema-only tables: SQL, columns and outputs are checked without
    /// reading any data. Returns each job's output schema; reports every problem at once.
    pub async fn validate(&self) -> Result<BTreeMap<String, SchemaRef>> {
        let mut problems = Vec::new();
        let mut outputs: BTreeMap<String, SchemaRef> = BTreeMap::new();
        for node in &self.graph.nodes {
            let mut tables: Vec<(String, Arc<dyn TableProvider>)> = Vec::new();
            let mut upstream_broken = false;
            for input in &node.inputs {
                let provider: Arc<dyn TableProvider> = match input {
                    Input::Source(s) => {
                        self.source(s).expect("graph checked sources").schema_only()
                    }
                    // A view over `_month_close`, registered when the job is planned.
                    Input::System(t) if t == crate::close::CLOSED_MONTHS => continue,
                    Input::System(t) => match crate::close::fixed_system_schema(t) {
                        Some(schema) => Arc::new(EmptyTable::new(schema)),
                        // A snapshot table: with no close on record, it is never read.
                        None => continue,
                    },
                    Input::Job { job, .. } => match outputs.get(job) {
                        Some(schema) => Arc::new(EmptyTable::new(schema.clone())),
                        None => {
                            upstream_broken = true;
                            continue;
                        }
                    },
                };
                tables.push((input.table().to_string(), provider));
            }
            if upstream_broken {
                continue; // its upstream's problem is already reported
            }
            let ctx = self.engine.session(&tables)?;
            match plan_job(&ctx, &node.spec).await {
                Ok(df) => {
                    let schema = df.schema().inner().clone();
                    // Type coercion and physical planning catch what the SQL planner lets pass.
                    match df.create_physical_plan().await {
                        Ok(_) => {
                            // Checks are planned against the output's schema.
                            ctx.register_table(
                                node.spec.table.as_str(),
                                Arc::new(EmptyTable::new(schema.clone())),
                            )?;
                            problems.extend(crate::session::plan_checks(&ctx, &node.spec).await);
                            problems.extend(close_columns_problems(&node.spec, &schema));
                            outputs.insert(node.spec.name.clone(), schema);
                        }
                        Err(e) => problems.push(crate::session::sql_error(&node.spec, e)),
                    }
                }
                Err(e) => problems.extend(flatten(e)),
            }
        }
        Error::from_many(problems)?;
        Ok(outputs)
    }

    /// The run plan for `selected` jobs (names in dependency order).
    pub fn plan(&self, selected: &[String], trigger: &str) -> Result<RunPlan> {
        let mut jobs = Vec::new();
        for name in selected {
            let node = self.graph.node(name).expect("selected from graph");
            jobs.push(PlannedJob {
                name: name.clone(),
                table: node.spec.table.clone(),
                url: self.table_url(&node.spec.table)?,
                mode: node.spec.mode,
                inputs: node.inputs.clone(),
                upstream_in_run: node
                    .inputs
                    .iter()
                    .filter_map(|i| match i {
                        Input::Job { job, .. } if selected.contains(job) => Some(job.clone()),
                        _ => None,
                    })
                    .collect(),
            });
        }
        Ok(RunPlan {
            run_id: new_run_id(),
            trigger: trigger.to_string(),
            jobs,
        })
    }

    /// Providers for every table a job may read: sources (contract-checked), curated outputs that
    /// exist, and `_runs`. Problems with a source are returned per source, not raised.
    pub async fn source_providers(
        &self,
        names: impl IntoIterator<Item = String>,
    ) -> HashMap<String, std::result::Result<Arc<dyn TableProvider>, String>> {
        let ctx = self.engine.session(&[]).expect("config validated at load");
        let state = ctx.state();
        let mut out = HashMap::new();
        for name in names {
            let Some(source) = self.source(&name) else {
                continue;
            };
            let r = source.register(&state).await.map_err(|e| e.to_string());
            if let Err(e) = &r {
                tracing::error!(source = %name, error = %e, "source failed its contract");
            }
            out.insert(name, r);
        }
        out
    }

    /// A session with every source (that passes its contract), every published curated table
    /// and the run ledger registered: for ad-hoc queries and `explain`.
    pub async fn query_session(&self) -> Result<datafusion::prelude::SessionContext> {
        self.query_session_with(&BTreeMap::new()).await
    }

    /// As `query_session`, with schema-only stand-ins for job tables not published yet.
    pub async fn query_session_with(
        &self,
        unpublished: &BTreeMap<String, SchemaRef>,
    ) -> Result<datafusion::prelude::SessionContext> {
        let mut tables: Vec<(String, Arc<dyn TableProvider>)> = Vec::new();
        let names: Vec<String> = self.sources.iter().map(|s| s.name.clone()).collect();
        for (name, provider) in self.source_providers(names).await {
            match provider {
                Ok(p) => tables.push((name, p)),
                Err(e) => tracing::warn!(source = %name, error = %e, "source not queryable"),
            }
        }
        let mut curated_tables: Vec<String> = self
            .graph
            .nodes
            .iter()
            .map(|n| n.spec.table.clone())
            .collect();
        curated_tables.push(ledger::RUNS_TABLE.to_string());
        curated_tables.push(crate::close::CLOSE_LOG.to_string());
        curated_tables.push(crate::close::CLOSED_RECORDS.to_string());
        for n in &self.graph.nodes {
            if n.spec.close.is_some() {
                curated_tables.push(crate::close::snapshot_table(&n.spec.table));
            }
        }
        for table in curated_tables {
            if let Some(t) = curated::open(&self.engine.stores, &self.table_url(&table)?).await? {
                tables.push((table, curated::provider(&t).await?));
            } else if let Some(schema) = self
                .graph
                .nodes
                .iter()
                .find(|n| n.spec.table == table)
                .and_then(|n| unpublished.get(&n.spec.name))
            {
                tables.push((table, Arc::new(EmptyTable::new(schema.clone()))));
            }
        }
        let ctx = self.engine.session(&tables)?;
        crate::close::register_closed_months(&ctx).await?;
        Ok(ctx)
    }
}

/// `[close]` names output columns: the month must be a string column, a record id an integer.
fn close_columns_problems(spec: &spec::JobSpec, schema: &SchemaRef) -> Vec<Error> {
    let Some(close) = &spec.close else {
        return vec![];
    };
    let mut problems = Vec::new();
    let mut check = |key: &str,
                     column: &str,
                     ok: &dyn Fn(&datafusion::arrow::datatypes::DataType) -> bool,
                     what: &str| {
        match schema.field_with_name(column) {
            Ok(f) if ok(f.data_type()) => {}
            Ok(f) => problems.push(Error::Config {
                path: spec.spec_path.clone(),
                key: key.into(),
                message: format!("column `{column}` is {}, expected {what}", f.data_type()),
            }),
            Err(_) => problems.push(Error::Config {
                path: spec.spec_path.clone(),
                key: key.into(),
                message: format!(
                    "`{column}` is not a column of the job's output (columns: {})",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    };
    check(
        "close.month_column",
        &close.month_column,
        &|t| {
            matches!(
                t,
                datafusion::arrow::datatypes::DataType::Utf8
                    | datafusion::arrow::datatypes::DataType::Utf8View
                    | datafusion::arrow::datatypes::DataType::LargeUtf8
            )
        },
        "a YYYY-MM string",
    );
    if let Some(id) = &close.record_id_column {
        check(
            "close.record_id_column",
            id,
            &|t| t.is_integer(),
            "an integer id",
        );
    }
    problems
}

fn flatten(e: Error) -> Vec<Error> {
    match e {
        Error::Many(v) => v,
        other => vec![other],
    }
}

/// A fresh run id: UTC time plus a random suffix, sortable.
pub fn new_run_id() -> String {
    format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// What a run will do: jobs in dependency order with their inputs.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub run_id: String,
    pub trigger: String,
    pub jobs: Vec<PlannedJob>,
}

/// One job in a run plan.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub name: String,
    pub table: String,
    pub url: Url,
    pub mode: spec::WriteMode,
    pub inputs: Vec<Input>,
    /// Upstream jobs that run earlier in this same run.
    pub upstream_in_run: Vec<String>,
}

impl RunPlan {
    /// Human-readable plan, as `retention plan` and `run --dry-run` print it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, j) in self.jobs.iter().enumerate() {
            let inputs: Vec<String> = j
                .inputs
                .iter()
                .map(|i| match i {
                    Input::Source(t) => format!("source:{t}"),
                    Input::Job { table, .. } => table.clone(),
                    Input::System(t) => t.clone(),
                })
                .collect();
            out.push_str(&format!(
                "{:>3}. {} -> {} ({}) <- [{}]\n",
                i + 1,
                j.name,
                j.url,
                j.mode,
                inputs.join(", ")
            ));
        }
        out
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// One outcome per planned job, in plan order.
    pub outcomes: Vec<JobOutcome>,
    /// Set when the run ledger could not be written (the jobs' outcomes stand).
    pub ledger_error: Option<String>,
}

impl RunReport {
    /// Jobs that did not succeed.
    pub fn failed(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.status != Status::Succeeded)
            .count()
    }

    /// `Ok` when every job succeeded and the ledger was written.
    pub fn into_result(self) -> Result<RunReport> {
        let failed = self.failed();
        if failed > 0 {
            return Err(Error::RunFailed {
                failed,
                total: self.outcomes.len(),
            });
        }
        if let Some(e) = &self.ledger_error {
            return Err(Error::Publish {
                table: ledger::RUNS_TABLE.into(),
                location: String::new(),
                message: e.clone(),
            });
        }
        Ok(self)
    }
}

/// Result of one job in a run.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub job: String,
    pub status: Status,
    pub rows_read: i64,
    pub rows_written: i64,
    pub bytes_read: i64,
    pub seconds: f64,
    pub output_version: Option<i64>,
    pub error: Option<String>,
}

/// Execute a plan: jobs in dependency order, at most `concurrency` at once; a failed job skips
/// its downstream. Every job gets a ledger row. Returns the outcomes in plan order.
pub async fn execute(ws: Arc<Workspace>, plan: &RunPlan, concurrency: usize) -> Result<RunReport> {
    let span = tracing::info_span!("run", run_id = %plan.run_id, trigger = %plan.trigger);
    async move {
        let needed_sources: Vec<String> = {
            let mut v: Vec<String> = plan
                .jobs
                .iter()
                .flat_map(|j| j.inputs.iter())
                .filter_map(|i| match i {
                    Input::Source(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let sources = Arc::new(ws.source_providers(needed_sources).await);

        let mut outcomes: BTreeMap<String, JobOutcome> = BTreeMap::new();
        let mut records: Vec<RunRecord> = Vec::new();
        let mut pending: Vec<&PlannedJob> = plan.jobs.iter().collect();
        let mut running: JoinSet<(JobOutcome, RunRecord)> = JoinSet::new();
        loop {
            // Skip jobs whose upstream failed; start jobs whose upstream succeeded.
            let mut i = 0;
            while i < pending.len() {
                let job = pending[i];
                let ups: Vec<Option<Status>> = job
                    .upstream_in_run
                    .iter()
                    .map(|u| outcomes.get(u).map(|o| o.status))
                    .collect();
                if ups
                    .iter()
                    .any(|s| matches!(s, Some(Status::Failed | Status::Skipped)))
                {
                    let now = Utc::now();
                    let failed_up: Vec<&str> = job
                        .upstream_in_run
                        .iter()
                        .filter(|u| {
                            outcomes
                                .get(*u)
                                .is_some_and(|o| o.status != Status::Succeeded)
                        })
                        .map(String::as_str)
                        .collect();
                    let msg = format!("skipped: upstream {} did not succeed", failed_up.join(", "));
                    tracing::warn!(job = %job.name, "{msg}");
                    let outcome = JobOutcome {
                        job: job.name.clone(),
                        status: Status::Skipped,
                        rows_read: 0,
                        rows_written: 0,
                        bytes_read: 0,
                        seconds: 0.0,
                        output_version: None,
                        error: Some(msg.clone()),
                    };
                    records.push(record(
                        &plan.run_id,
                        &plan.trigger,
                        &outcome,
                        now,
                        now,
                        "{}".into(),
                    ));
                    outcomes.insert(job.name.clone(), outcome);
                    pending.remove(i);
                    continue;
                }
                if running.len() < concurrency && ups.iter().all(|s| *s == Some(Status::Succeeded))
                {
                    let job = pending.remove(i).clone();
                    let ws = ws.clone();
                    let sources = sources.clone();
                    let plan_meta = (plan.run_id.clone(), plan.trigger.clone());
                    let span = tracing::info_span!("job", job = %job.name, run_id = %plan_meta.0);
                    running.spawn(
                        async move {
                            let started = Utc::now();
                            let clock = Instant::now();
                            tracing::info!("job started");
                            let result = run_job(&ws, &job, &sources, &plan_meta.0).await;
                            let seconds = clock.elapsed().as_secs_f64();
                            let finished = Utc::now();
                            let (outcome, inputs) = match result {
                                Ok(done) => {
                                    tracing::info!(
                                        rows = done.rows_written,
                                        version = done.version,
                                        seconds,
                                        "job published"
                                    );
                                    (
                                        JobOutcome {
                                            job: job.name.clone(),
                                            status: Status::Succeeded,
                                            rows_read: done.rows_read,
                                            rows_written: done.rows_written,
                                            bytes_read: done.bytes_read,
                                            seconds,
                                            output_version: Some(done.version),
                                            error: None,
                                        },
                                        done.input_versions,
                                    )
                                }
                                Err(e) => {
                                    let msg = e.to_string();
                                    tracing::error!(error = %msg, "job failed");
                                    (
                                        JobOutcome {
                                            job: job.name.clone(),
                                            status: Status::Failed,
                                            rows_read: 0,
                                            rows_written: 0,
                                            bytes_read: 0,
                                            seconds,
                                            output_version: None,
                                            error: Some(msg),
                                        },
                                        "{}".to_string(),
                                    )
                                }
                            };
                            let rec = record(
                                &plan_meta.0,
                                &plan_meta.1,
                                &outcome,
                                started,
                                finished,
                                inputs,
                            );
                            (outcome, rec)
                        }
                        .instrument(span),
                    );
                    continue;
                }
                i += 1;
            }
            if running.is_empty() {
                break;
            }
            match running.join_next().await {
                Some(Ok((outcome, rec))) => {
                    records.push(rec);
                    outcomes.insert(outcome.job.clone(), outcome);
                }
                Some(Err(join)) => {
                    return Err(Error::Job {
                        job: "?".into(),
                        message: format!("job task panicked: {join}"),
                    });
                }
                None => break,
            }
        }
        let ledger_error =
            match ledger::append(&ws.engine.stores, &ws.engine.project.curated, &records).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(error = %e, "run ledger not written");
                    Some(e.to_string())
                }
            };
        Ok(RunReport {
            outcomes: plan
                .jobs
                .iter()
                .filter_map(|j| outcomes.remove(&j.name))
                .collect(),
            ledger_error,
        })
    }
    .instrument(span)
    .await
}

/// The ledger row of one job's outcome in run `run_id`.
fn record(
    run_id: &str,
    trigger: &str,
    o: &JobOutcome,
    start: chrono::DateTime<Utc>,
    end: chrono::DateTime<Utc>,
    inputs: String,
) -> RunRecord {
    RunRecord {
        run_id: run_id.to_string(),
        job: o.job.clone(),
        trigger: trigger.to_string(),
        started_at: start,
        finished_at: end,
        status: o.status,
        rows_read: o.rows_read,
        rows_written: o.rows_written,
        bytes_read: o.bytes_read,
        input_versions: inputs,
        output_version: o.output_version,
        error: o.error.clone(),
        actor: Some(ledger::current_actor()),
        reason: None,
    }
}

struct JobDone {
    rows_read: i64,
    rows_written: i64,
    bytes_read: i64,
    version: i64,
    input_versions: String,
}

/// Run one job: register its inputs, plan its SQL, publish the result in one Delta commit.
async fn run_job(
    ws: &Workspace,
    job: &PlannedJob,
    sources: &HashMap<String, std::result::Result<Arc<dyn TableProvider>, String>>,
    run_id: &str,
) -> Result<JobDone> {
    let node = ws.graph.node(&job.name).expect("planned from graph");
    let spec = &node.spec;
    let job_err = |message: String| Error::Job {
        job: job.name.clone(),
        message,
    };
    let mut tables: Vec<(String, Arc<dyn TableProvider>)> = Vec::new();
    let mut versions = serde_json::Map::new();
    // The close log first: a close that commits while this job opens its inputs is then either
    // unseen (its frozen rows are ignored) or seen with everything it froze.
    let mut inputs: Vec<&Input> = job.inputs.iter().collect();
    inputs.sort_by_key(|i| *i != &Input::System(crate::close::CLOSE_LOG.to_string()));
    for input in inputs {
        if *input == Input::System(crate::close::CLOSED_MONTHS.to_string()) {
            continue; // a view over `_month_close`, registered when the job is planned
        }
        match input {
            Input::Source(name) => match sources.get(name) {
                Some(Ok(p)) => {
                    tables.push((name.clone(), p.clone()));
                    versions.insert(name.clone(), "source".into());
                }
                Some(Err(e)) => return Err(job_err(format!("input {e}"))),
                None => return Err(job_err(format!("source `{name}` was not registered"))),
            },
            Input::Job { table, .. } | Input::System(table) => {
                let url = ws.table_url(table)?;
                let Some(t) = curated::open(&ws.engine.stores, &url).await? else {
                    if let Input::System(name) = input {
                        // The close tables start empty; a snapshot table is only read once a
                        // month is closed, and then it exists.
                        if name == crate::close::CLOSE_LOG || name == crate::close::CLOSED_RECORDS {
                            let schema = crate::close::fixed_system_schema(name).expect("fixed");
                            tables.push((name.clone(), Arc::new(EmptyTable::new(schema))));
                            versions.insert(name.clone(), (-1).into());
                            continue;
                        }
                        if name.starts_with("_closed_") {
                            continue;
                        }
                    }
                    return Err(job_err(match input {
                        Input::Job { job: upstream, .. } => format!(
                            "input table `{table}` has not been published yet; run `retention run +{}` to build it with its upstream (or `retention run {upstream}`)",
                            job.name
                        ),
                        _ => format!("input table `{table}` does not exist yet"),
                    }));
                };
                versions.insert(
                    table.clone(),
                    t.version().map(|v| v as i64).unwrap_or(-1).into(),
                );
                tables.push((table.clone(), curated::provider(&t).await?));
            }
        }
    }
    let ctx = ws.engine.session(&tables)?;
    let df = plan_job(&ctx, spec).await?;

    let partitions = if spec.mode == spec::WriteMode::OverwritePartitions {
        distinct_partitions(df.clone(), &spec.partition_by)
            .await
            .map_err(|e| job_err(e.to_string()))?
    } else {
        vec![]
    };
    let physical = df
        .clone()
        .create_physical_plan()
        .await
        .map_err(|e| job_err(e.to_string()))?;
    let source: Arc<dyn TableProvider> = if spec.checks.is_empty() {
        // Stream the result straight into the Delta writer.
        Arc::new(PreparedPlan {
            plan: physical.clone(),
        })
    } else {
        // Checks need the whole result before anything is published.
        let batches = datafusion::physical_plan::collect(physical.clone(), ctx.task_ctx())
            .await
            .map_err(|e| job_err(e.to_string()))?;
        let result: Arc<dyn TableProvider> = Arc::new(datafusion::datasource::MemTable::try_new(
            physical.schema(),
            vec![batches],
        )?);
        ctx.register_table(spec.table.as_str(), result.clone())?;
        crate::session::run_checks(&ctx, spec).await?;
        result
    };
    let logical = LogicalPlanBuilder::scan(job.table.as_str(), provider_as_source(source), None)
        .and_then(|b| b.build())
        .map_err(|e| job_err(e.to_string()))?;

    let project = &ws.engine.project;
    let mut configuration = HashMap::new();
    configuration.insert(
        "delta.logRetentionDuration".to_string(),
        Some(format!("interval {} days", project.log_retention_days)),
    );
    configuration.insert(
        "delta.deletedFileRetentionDuration".to_string(),
        Some(format!(
            "interval {} hours",
            project.deleted_file_retention_hours
        )),
    );
    let mut commit_metadata = HashMap::new();
    commit_metadata.insert(
        "retention.run_id".to_string(),
        serde_json::Value::from(run_id),
    );
    commit_metadata.insert(
        "retention.job".to_string(),
        serde_json::Value::from(job.name.as_str()),
    );
    let published = curated::publish(
        &ws.engine.stores,
        Arc::new(ctx.state()),
        logical,
        curated::Publish {
            table: &job.table,
            url: &job.url,
            mode: spec.mode,
            partition_by: &spec.partition_by,
            partitions,
            description: &spec.description,
            configuration,
            commit_metadata,
        },
    )
    .await?;
    let (rows_read, bytes_read) = leaf_metrics(&physical);
    Ok(JobDone {
        rows_read,
        rows_written: published.rows_written,
        bytes_read,
        version: published.version,
        input_versions: serde_json::Value::Object(versions).to_string(),
    })
}

/// Distinct values of the partition columns in the job's result.
async fn distinct_partitions(
    df: datafusion::prelude::DataFrame,
    columns: &[String],
) -> datafusion::error::Result<Vec<Vec<ScalarValue>>> {
    let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
    let batches = df.select_columns(&cols)?.distinct()?.collect().await?;
    let mut out = Vec::new();
    for b in batches {
        for row in 0..b.num_rows() {
            let mut values = Vec::new();
            for c in 0..b.num_columns() {
                values.push(ScalarValue::try_from_array(b.column(c), row)?);
            }
            out.push(values);
        }
    }
    out.sort_by_key(|a| format!("{a:?}"));
    Ok(out)
}

/// Rows and bytes the leaf scans of an executed plan read.
fn leaf_metrics(plan: &Arc<dyn ExecutionPlan>) -> (i64, i64) {
    let children = plan.children();
    if children.is_empty() {
        let m = plan.metrics();
        let rows = m.as_ref().and_then(|m| m.output_rows()).unwrap_or(0) as i64;
        let bytes = m
            .as_ref()
            .and_then(|m| m.sum_by_name("bytes_scanned"))
            .map(|v| v.as_usize() as i64)
            .unwrap_or(0);
        return (rows, bytes);
    }
    children.iter().fold((0, 0), |(r, b), c| {
        let (cr, cb) = leaf_metrics(c);
        (r + cr, b + cb)
    })
}

/// A table whose scan is an already-planned physical plan: lets Delta's writer stream the job's
/// result while we keep the plan to read its metrics afterwards.
#[derive(Debug)]
struct PreparedPlan {
    plan: Arc<dyn ExecutionPlan>,
}

#[async_trait]
impl TableProvider for PreparedPlan {
    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let schema = self.plan.schema();
        match projection {
            Some(p) if *p != (0..schema.fields().len()).collect::<Vec<_>>() => {
                let exprs: Vec<ProjectionExpr> = p
                    .iter()
                    .map(|&i| ProjectionExpr {
                        expr: Arc::new(ColumnExpr::new(schema.field(i).name(), i)),
                        alias: schema.field(i).name().clone(),
                    })
                    .collect();
                Ok(Arc::new(ProjectionExec::try_new(
                    exprs,
                    Arc::new(SealedPlan {
                        inner: self.plan.clone(),
                    }),
                )?))
            }
            _ => Ok(Arc::new(SealedPlan {
                inner: self.plan.clone(),
            })),
        }
    }
}

/// Shows an already-optimized plan to an outer plan as a leaf, so the outer plan's optimizer
/// cannot rebuild (and so detach the metrics of) the nodes inside it.
#[derive(Debug)]
struct SealedPlan {
    inner: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for SealedPlan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "SealedPlan: {}", self.inner.name())
    }
}

impl ExecutionPlan for SealedPlan {
    fn name(&self) -> &'static str {
        "SealedPlan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }
}
