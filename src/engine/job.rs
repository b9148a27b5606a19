//! A job's SQL planned in a session: parameters bound, the output schema checked, the hooks'
//! rewrite applied, and planning errors turned into file:line:column.

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Date32Type, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::{cast, ident};
use datafusion::prelude::{DataFrame, SessionContext};

use crate::engine::materialize;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::project::config::LatestDay;
use crate::project::incremental::Range;
use crate::project::spec::{AS_OF_PARAM, END_PARAM, JobSpec, START_PARAM};

/// A day as a DATE value (NULL for None): what `$as_of`, `$start` and `$end` are bound to, and
/// what an incremental job's interval is compared with in a DATE column.
pub fn date_value(day: Option<NaiveDate>) -> ScalarValue {
    ScalarValue::Date32(day.map(Date32Type::from_naive_date))
}

/// The values bound to a job's placeholders: its parameters, and `$as_of` as a DATE (NULL when no
/// day is known, e.g. `latest` of an empty table).
/// For an incremental job, also `$start` and `$end` as DATEs: `interval`, or when none is given
/// (validate, explain, SQL tests) everything from the spec's `start` on.
pub fn bound_params(
    spec: &JobSpec,
    as_of: Option<NaiveDate>,
    interval: Option<Range>,
) -> ParamValues {
    let mut params = spec.params.clone();
    params.push((AS_OF_PARAM.to_string(), date_value(as_of)));
    if let Some(inc) = &spec.incremental {
        let r = interval.unwrap_or(Range {
            start: inc.start,
            end: NaiveDate::MAX,
        });
        params.push((START_PARAM.to_string(), date_value(Some(r.start))));
        params.push((END_PARAM.to_string(), date_value(Some(r.end))));
    }
    ParamValues::from(params)
}

/// The as-of day `latest`: the latest UTC day of `latest.column` in `latest.table` as registered
/// in `ctx` (`None` when the table is empty).
pub async fn latest_day(ctx: &SessionContext, latest: &LatestDay) -> Result<Option<NaiveDate>> {
    let batches = ctx
        .table(latest.table.as_str())
        .await?
        .aggregate(
            vec![],
            vec![max(cast(ident(&latest.column), DataType::Date32)).alias("day")],
        )?
        .collect()
        .await?;
    let day = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.column(0).as_primitive::<Date32Type>().clone())
        .filter(|a| a.is_valid(0))
        .and_then(|a| Date32Type::to_naive_date_opt(a.value(0)));
    Ok(day)
}

impl Engine {
    /// Plan a job's SQL in `ctx` with its parameters bound, then let the hooks rewrite its output
    /// (a frozen table shows its closed months exactly as they were frozen); errors carry
    /// file:line:column.
    pub async fn plan_job(
        &self,
        ctx: &SessionContext,
        spec: &JobSpec,
        as_of: Option<NaiveDate>,
        interval: Option<Range>,
    ) -> Result<DataFrame> {
        let sql_err = |e: DataFusionError| sql_error(spec, e);
        self.prepare(ctx).await?;
        // A materialized CTE is computed in this process, which a cluster's workers cannot
        // share: there every CTE is inlined (each read computes it, on the workers).
        let materialized = !self.is_distributed();
        let params = bound_params(spec, as_of, interval);
        let plan = materialize::plan_sql(ctx, &spec.sql, &params, materialized)
            .await
            .map_err(sql_err)?;
        let df = plain_strings(DataFrame::new(ctx.state(), plan)).map_err(sql_err)?;
        check_output_schema(spec, df.schema().inner())?;
        let mut df = df;
        for hook in &self.hooks {
            df = hook.job_output(ctx, spec, df).await?;
        }
        Ok(df)
    }
}

/// `df` with its string views (raw sources read as Utf8View), nested ones too, cast to Utf8:
/// curated tables keep plain strings, whatever the engine read.
fn plain_strings(df: DataFrame) -> datafusion::error::Result<DataFrame> {
    use datafusion::logical_expr::Expr;
    let plain: Vec<_> = df
        .schema()
        .fields()
        .iter()
        .map(|f| without_views(f.data_type()))
        .collect();
    if plain.iter().all(Option::is_none) {
        return Ok(df);
    }
    let columns: Vec<Expr> = df
        .schema()
        .iter()
        .zip(plain)
        .map(|((q, f), plain)| match plain {
            Some(t) => cast(Expr::from((q, f)), t).alias(f.name()),
            None => Expr::from((q, f)),
        })
        .collect();
    df.select(columns)
}

/// `t` with every string view in it (in lists and structs too) a plain string; `None` when it
/// holds none.
fn without_views(t: &DataType) -> Option<DataType> {
    use datafusion::arrow::datatypes::Field;
    use std::sync::Arc;
    let field = |f: &Arc<Field>| {
        without_views(f.data_type()).map(|d| Arc::new(f.as_ref().clone().with_data_type(d)))
    };
    match t {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::List(f) => field(f).map(DataType::List),
        DataType::LargeList(f) => field(f).map(DataType::LargeList),
        DataType::Struct(fields) => {
            let plain: Vec<_> = fields.iter().map(field).collect();
            if plain.iter().all(Option::is_none) {
                return None;
            }
            let fields = fields
                .iter()
                .zip(plain)
                .map(|(f, p)| p.unwrap_or_else(|| f.clone()));
            Some(DataType::Struct(fields.collect()))
        }
        _ => None,
    }
}

/// A DataFusion error while planning `spec`'s SQL, with file:line:column when known.
pub fn sql_error(spec: &JobSpec, e: DataFusionError) -> Error {
    let (line, column) = error_position(&e).unwrap_or((0, 0));
    Error::Sql {
        job: spec.name.clone(),
        path: spec.sql_path.clone(),
        line,
        column,
        message: strip_context(&e),
        source: Some(Box::new(e)),
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
    if let Some(inc) = &spec.incremental {
        let found = schema
            .field_with_name(&inc.time_column)
            .map(|f| f.data_type().clone());
        if !matches!(found, Ok(DataType::Date32 | DataType::Utf8)) {
            problems.push(Error::Job {
                job: spec.name.clone(),
                message: format!(
                    "{}: time_column `{}` must be an output column of type DATE or string ({})",
                    spec.spec_path.display(),
                    inc.time_column,
                    found.map_or("not in the output".to_string(), |t| format!("found {t}"))
                ),
            });
        }
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
    parser_position(&e.to_string())
}

/// Extract `line` and `column` from a sqlparser message (`... at Line: 3, Column: 7`).
pub fn parser_position(message: &str) -> Option<(usize, usize)> {
    let i = message.rfind("Line: ")?;
    let rest = &message[i + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

/// The innermost message, without DataFusion's context wrappers.
pub fn strip_context(e: &DataFusionError) -> String {
    match e {
        DataFusionError::Diagnostic(_, inner) => strip_context(inner),
        DataFusionError::Context(_, inner) => strip_context(inner),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::plain_strings;
    use datafusion::arrow::array::{Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::{DataFrame, SessionContext};
    use std::sync::Arc;

    fn types(df: &DataFrame) -> Vec<DataType> {
        let fields = df.schema().fields();
        fields.iter().map(|f| f.data_type().clone()).collect()
    }

    async fn rendered(df: DataFrame) -> String {
        let batches = df.collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn string_views_leave_the_job_as_plain_strings_with_their_names_and_values() {
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
            (
                "region",
                Arc::new(StringViewArray::from(vec![
                    Some("north"),
                    None,
                    Some("a region name longer than twelve bytes"),
                ])) as _,
            ),
        ])
        .unwrap();
        let ctx = SessionContext::new();
        let df = plain_strings(ctx.read_batch(batch).unwrap()).unwrap();
        assert_eq!(types(&df), [DataType::Int64, DataType::Utf8]);
        assert_eq!(
            rendered(df).await,
            "+----+----------------------------------------+\n\
             | id | region                                 |\n\
             +----+----------------------------------------+\n\
             | 1  | north                                  |\n\
             | 2  |                                        |\n\
             | 3  | a region name longer than twelve bytes |\n\
             +----+----------------------------------------+"
        );
        // Nested: a list and a struct of views become a list and a struct of strings.
        let nested = ctx
            .sql(
                "SELECT make_array(arrow_cast('north', 'Utf8View')) AS regions, \
                 named_struct('carrier', arrow_cast('dhl', 'Utf8View'), 'n', 1) AS shipment",
            )
            .await
            .unwrap();
        let nested = plain_strings(nested).unwrap();
        let types: Vec<_> = types(&nested).iter().map(DataType::to_string).collect();
        assert!(types.iter().all(|t| !t.contains("View")), "{types:?}");
        assert!(
            types[0].contains("Utf8") && types[1].contains("Utf8"),
            "{types:?}"
        );
        let text = rendered(nested).await;
        assert!(
            text.contains("| [north] | {carrier: dhl, n: 1} |"),
            "{text}"
        );
    }
}
