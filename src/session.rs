//! DataFusion sessions for a project: one shared runtime (object stores, memory pool) and a fresh
//! session per job; planning a job's SQL with bound parameters and SQL positions in errors.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use crate::config::Project;
use crate::error::{Error, Result};
use crate::spec::JobSpec;
use crate::storage::Stores;

/// Shared engine state: project settings, stores and the DataFusion runtime.
#[derive(Clone)]
pub struct Engine {
    pub project: Project,
    pub stores: Stores,
    pub runtime: Arc<RuntimeEnv>,
}

impl Engine {
    /// Build the runtime for `project` over `stores` (which tests may have pre-filled).
    pub fn new(project: Project, stores: Stores) -> Result<Engine> {
        // DataFusion 55 caches object listings for the runtime's lifetime by default: files that
        // land in the raw store later (a late ledger posting) would never be seen by a
        // long-lived engine. Sources are listed afresh on every run.
        let mut builder = RuntimeEnvBuilder::new().with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0),
        );
        if let Some(limit) = project.memory_limit {
            builder = builder.with_memory_limit(limit, 1.0);
        }
        let runtime = builder.build_arc()?;
        stores.register_with(&runtime, &[&project.raw, &project.curated])?;
        Ok(Engine {
            project,
            stores,
            runtime,
        })
    }

    /// Session settings: the project's `[datafusion]` table applied through `ConfigOptions::set`.
    pub fn config(&self) -> Result<SessionConfig> {
        // DATAFUSION_* environment variables first (DataFusion's own mapping), then the file.
        let mut config = SessionConfig::from_env()?.with_information_schema(true);
        if let Some(n) = self.project.target_partitions {
            config = config.with_target_partitions(n);
        }
        let options = config.options_mut();
        options.sql_parser.collect_spans = true;
        // As delta-rs does: hash-join IN-list pushdown can panic on dictionary-encoded keys
        // (Hive partition columns). Overridable through [datafusion].
        options.optimizer.hash_join_inlist_pushdown_max_size = 0;
        // Strings as plain Utf8, not Utf8View: filtered or windowed view batches keep every
        // source buffer alive, and hash-join builds concatenate them, which made churn_root_cause
        // grow quadratically with the data (8.6 s -> 3.2 s at 3M orders). Overridable.
        options.execution.parquet.schema_force_view_types = false;
        options
            .optimizer
            .hash_join_inlist_pushdown_max_distinct_values = 0;
        for (k, v) in &self.project.datafusion {
            // A DATAFUSION_* environment variable for the same key wins over the file.
            if std::env::var_os(k.to_ascii_uppercase().replace('.', "_")).is_some() {
                continue;
            }
            options.set(k, v).map_err(|e| Error::Config {
                path: self.project.root.join(crate::config::PROJECT_FILE),
                key: k.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(config)
    }

    /// A new session sharing the runtime, with `tables` registered by name.
    pub fn session(&self, tables: &[(String, Arc<dyn TableProvider>)]) -> Result<SessionContext> {
        let state = SessionStateBuilder::new()
            .with_config(self.config()?)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            // Delta's planner: its writer plans custom nodes through the session we pass it.
            .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
            .build();
        let ctx = SessionContext::new_with_state(state);
        for f in crate::udf::all() {
            ctx.register_udf(f);
        }
        for (name, provider) in tables {
            ctx.register_table(name.as_str(), provider.clone())?;
        }
        Ok(ctx)
    }
}

/// Plan a job's SQL in `ctx` with its parameters bound; errors carry file:line:column.
pub async fn plan_job(ctx: &SessionContext, spec: &JobSpec) -> Result<DataFrame> {
    let sql_err = |e: DataFusionError| sql_error(spec, e);
    crate::close::register_closed_months(ctx).await?;
    let df = ctx.sql(&spec.sql).await.map_err(sql_err)?;
    let params: Vec<(String, datafusion::common::ScalarValue)> = spec.params.clone();
    let df = df
        .with_param_values(ParamValues::from(params))
        .map_err(sql_err)?;
    check_output_schema(spec, df.schema().inner())?;
    // A frozen table shows its closed months exactly as they were frozen.
    crate::close::overlay(ctx, spec, df).await
}

/// Plan a check's SQL with the job's parameters bound.
async fn plan_check(
    ctx: &SessionContext,
    spec: &JobSpec,
    check: &crate::spec::Check,
) -> Result<DataFrame> {
    let check_err = |e: DataFusionError| {
        let (line, column) = error_position(&e).unwrap_or((0, 0));
        Error::Sql {
            job: format!("{} (check `{}`)", spec.name, check.name),
            path: spec.spec_path.clone(),
            line,
            column,
            message: crate::storage::redact(&strip_context(&e)),
        }
    };
    let df = ctx.sql(&check.sql).await.map_err(check_err)?;
    df.with_param_values(ParamValues::from(spec.params.clone()))
        .map_err(check_err)
}

/// Plan (without running) every check of `spec`; the output must be registered in `ctx`.
pub async fn plan_checks(ctx: &SessionContext, spec: &JobSpec) -> Vec<Error> {
    let mut problems = Vec::new();
    for check in &spec.checks {
        match plan_check(ctx, spec, check).await {
            Ok(df) => {
                if let Err(e) = df.create_physical_plan().await {
                    problems.push(Error::Job {
                        job: spec.name.clone(),
                        message: format!("check `{}`: {e}", check.name),
                    });
                }
            }
            Err(e) => problems.push(e),
        }
    }
    problems
}

/// Run every check of `spec` against its result (registered in `ctx` under the output table's
/// name). Each check returns its violations; any row fails the job, naming the check and
/// showing the first rows.
pub async fn run_checks(ctx: &SessionContext, spec: &JobSpec) -> Result<()> {
    let mut failures = Vec::new();
    for check in &spec.checks {
        let batches = plan_check(ctx, spec, check).await?.collect().await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows > 0 {
            let mut sample = Vec::new();
            'outer: for b in &batches {
                for r in 0..b.num_rows() {
                    let cells: Vec<String> = b
                        .schema()
                        .fields()
                        .iter()
                        .enumerate()
                        .map(|(c, f)| {
                            let v = datafusion::arrow::util::display::array_value_to_string(
                                b.column(c),
                                r,
                            )
                            .unwrap_or_default();
                            format!("{}={v}", f.name())
                        })
                        .collect();
                    sample.push(format!("({})", cells.join(", ")));
                    if sample.len() == 3 {
                        break 'outer;
                    }
                }
            }
            let about = if check.description.is_empty() {
                String::new()
            } else {
                format!(" ({})", check.description)
            };
            failures.push(Error::Job {
                job: spec.name.clone(),
                message: format!(
                    "check `{}` failed{about}: {rows} violating row(s), e.g. {}; nothing was published",
                    check.name,
                    sample.join(" ")
                ),
            });
        }
    }
    Error::from_many(failures)
}

/// A DataFusion error while planning `spec`'s SQL, with file:line:column when known.
pub fn sql_error(spec: &JobSpec, e: DataFusionError) -> Error {
    let (line, column) = error_position(&e).unwrap_or((0, 0));
    Error::Sql {
        job: spec.name.clone(),
        path: spec.sql_path.clone(),
        line,
        column,
        message: crate::storage::redact(&strip_context(&e)),
    }
}

/// Output columns must be unique (case-insensitively, as Delta requires) and include `partition_by`.
pub fn check_output_schema(spec: &JobSpec, schema: &SchemaRef) -> Result<()> {
    let mut problems = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for f in schema.fields() {
        let lower = f.name().to_ascii_lowercase();
        if seen.contains(&lower) {
            problems.push(Error::Job {
                job: spec.name.clone(),
                message: format!(
                    "{}: output has duplicate column name `{}`; alias one of them",
                    spec.sql_path.display(),
                    f.name()
                ),
            });
        }
        seen.push(lower);
    }
    for p in &spec.partition_by {
        if schema.field_with_name(p).is_err() {
            problems.push(Error::Job {
                job: spec.name.clone(),
                message: format!(
                    "{}: output.partition_by names `{p}`, which the SQL's output does not have (columns: {})",
                    spec.spec_path.display(),
                    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    Error::from_many(problems)
}

/// Line and column of a SQL error, from DataFusion's diagnostic or the parser's message.
pub fn error_position(e: &DataFusionError) -> Option<(usize, usize)> {
    if let Some(span) = e.diagnostic().and_then(|d| d.span)
        && span.start.line > 0
    {
        return Some((span.start.line as usize, span.start.column as usize));
    }
    crate::dag::parser_position(&e.to_string())
}

/// The innermost message, without DataFusion's context wrappers.
fn strip_context(e: &DataFusionError) -> String {
    match e {
        DataFusionError::Diagnostic(_, inner) => strip_context(inner),
        DataFusionError::Context(_, inner) => strip_context(inner),
        other => other.to_string(),
    }
}
