//! `retention validate`: every job planned against schema-only tables in dependency order, so SQL,
//! columns, checks and `[close]` columns are checked without reading any data; every problem is
//! reported at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;

use crate::engine::checks::plan_checks;
use crate::engine::job::sql_error;
use crate::error::{Error, Result};
use crate::plan::graph::{Input, Node};
use crate::plan::workspace::Workspace;
use crate::project::spec::JobSpec;
use crate::store::system::{CLOSED_MONTHS, fixed_schema};

impl Workspace {
    /// Plan every job against schema-only tables: SQL, columns and outputs are checked without
    /// reading any data. Returns each job's output schema; reports every problem at once.
    pub async fn validate(&self) -> Result<BTreeMap<String, SchemaRef>> {
        let mut problems = Vec::new();
        let mut outputs: BTreeMap<String, SchemaRef> = BTreeMap::new();
        let as_of = Some(self.engine.today());
        for node in &self.graph.nodes {
            // A job whose upstream is broken is skipped: that problem is already reported.
            let Some(tables) = self.schema_only_inputs(node, &outputs) else {
                continue;
            };
            let ctx = self.engine.session(&tables)?;
            let df = match self.engine.plan_job(&ctx, &node.spec, as_of, None).await {
                Ok(df) => df,
                Err(e) => {
                    problems.extend(e.flatten());
                    continue;
                }
            };
            let schema = df.schema().inner().clone();
            // Type coercion and physical planning catch what the SQL planner lets pass.
            if let Err(e) = df.create_physical_plan().await {
                problems.push(sql_error(&node.spec, e));
                continue;
            }
            // Checks are planned against the output's schema.
            ctx.register_table(
                node.spec.table.as_str(),
                Arc::new(EmptyTable::new(schema.clone())),
            )?;
            problems.extend(plan_checks(&ctx, &node.spec, as_of).await);
            problems.extend(close_columns_problems(&node.spec, &schema));
            problems.extend(described_columns_problems(&node.spec, &schema));
            outputs.insert(node.spec.name.clone(), schema);
        }
        Error::from_many(problems)?;
        Ok(outputs)
    }

    /// Schema-only stand-ins for a job's inputs; `None` when an upstream job did not plan.
    fn schema_only_inputs(
        &self,
        node: &Node,
        outputs: &BTreeMap<String, SchemaRef>,
    ) -> Option<Vec<(String, Arc<dyn TableProvider>)>> {
        let mut tables: Vec<(String, Arc<dyn TableProvider>)> = Vec::new();
        for input in &node.inputs {
            let provider: Arc<dyn TableProvider> = match input {
                Input::Source(s) => self.source(s).expect("graph checked sources").schema_only(),
                // A view over `_month_close`, registered when the job is planned.
                Input::System(t) if t == CLOSED_MONTHS => continue,
                Input::System(t) => match fixed_schema(t) {
                    Some(schema) => Arc::new(EmptyTable::new(schema)),
                    // A snapshot table: with no close on record, it is never read.
                    None => continue,
                },
                Input::Job { job, .. } => Arc::new(EmptyTable::new(outputs.get(job)?.clone())),
            };
            tables.push((input.table().to_string(), provider));
        }
        Some(tables)
    }
}

/// `[columns]` describes output columns only, and `output.zorder_by`, `sort_by` and
/// `bloom_filter` name them.
fn described_columns_problems(spec: &JobSpec, schema: &SchemaRef) -> Vec<Error> {
    let described = spec.columns.keys().map(|c| (format!("columns.{c}"), c));
    let zorder = spec
        .zorder_by
        .iter()
        .map(|c| ("output.zorder_by".to_string(), c));
    let layout = (spec.file_layout.columns()).map(|(key, c)| (key.to_string(), c));
    described
        .chain(zorder)
        .chain(layout)
        .filter(|(_, c)| schema.field_with_name(c).is_err())
        .map(|(key, c)| not_an_output_column(spec, &key, c, schema))
        .collect()
}

/// `key` of `spec` names `column`, which the job's output lacks.
fn not_an_output_column(spec: &JobSpec, key: &str, column: &str, schema: &SchemaRef) -> Error {
    Error::Config {
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
    }
}

/// `[close]` names output columns: the month must be a string column, a record id an integer.
fn close_columns_problems(spec: &JobSpec, schema: &SchemaRef) -> Vec<Error> {
    let Some(close) = &spec.close else {
        return vec![];
    };
    let mut problems = Vec::new();
    let mut check =
        |key: &str, column: &str, ok: &dyn Fn(&DataType) -> bool, what: &str| match schema
            .field_with_name(column)
        {
            Ok(f) if ok(f.data_type()) => {}
            Ok(f) => problems.push(Error::Config {
                path: spec.spec_path.clone(),
                key: key.into(),
                message: format!("column `{column}` is {}, expected {what}", f.data_type()),
            }),
            Err(_) => problems.push(not_an_output_column(spec, key, column, schema)),
        };
    check(
        "close.month_column",
        &close.month_column,
        &|t| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8),
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
