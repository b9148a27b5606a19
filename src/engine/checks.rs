//! Data checks (`[[checks]]` in a job spec): queries over a job's result that return its
//! violations, planned by `validate` and run before anything is published.

use chrono::NaiveDate;
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionContext};

use crate::engine::job::{bound_params, error_position, strip_context};
use crate::error::{Error, Result};
use crate::project::spec::{Check, JobSpec};

/// Plan a check's SQL with the job's parameters bound.
async fn plan_check(
    ctx: &SessionContext,
    spec: &JobSpec,
    check: &Check,
    as_of: Option<NaiveDate>,
) -> Result<DataFrame> {
    let check_err = |e: DataFusionError| {
        let (line, column) = error_position(&e).unwrap_or((0, 0));
        Error::Sql {
            job: format!("{} (check `{}`)", spec.name, check.name),
            path: spec.spec_path.clone(),
            line,
            column,
            message: strip_context(&e),
            source: Some(Box::new(e)),
        }
    };
    let df = ctx.sql(&check.sql).await.map_err(check_err)?;
    df.with_param_values(bound_params(spec, as_of, None))
        .map_err(check_err)
}

/// Plan (without running) every check of `spec`; the output must be registered in `ctx`.
pub async fn plan_checks(
    ctx: &SessionContext,
    spec: &JobSpec,
    as_of: Option<NaiveDate>,
) -> Vec<Error> {
    let mut problems = Vec::new();
    for check in &spec.checks {
        match plan_check(ctx, spec, check, as_of).await {
            Ok(df) => {
                if let Err(e) = df.create_physical_plan().await {
                    problems.push(Error::Check {
                        job: spec.name.clone(),
                        check: check.name.clone(),
                        source: e,
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
pub async fn run_checks(
    ctx: &SessionContext,
    spec: &JobSpec,
    as_of: Option<NaiveDate>,
) -> Result<()> {
    // The checks are independent queries over the same result: run at once, reported in order.
    let results = futures::future::join_all(spec.checks.iter().map(|check| async move {
        let batches = plan_check(ctx, spec, check, as_of).await?.collect().await?;
        Ok::<_, Error>((check, batches))
    }))
    .await;
    let mut failures = Vec::new();
    for result in results {
        let (check, batches) = result?;
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
