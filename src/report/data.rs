//! What the report reads: each curated table it needs at its latest Delta version (the version is
//! kept for the page's footer), queried with fixed SQL whose month bound is a bound parameter, and
//! each result as a `Frame` of exact text (what the page and its JSON island show) beside the
//! number a chart plots.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::TableProvider;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::store::delta;

/// The curated tables the report reads.
pub const TABLES: [&str; 8] = [
    "cohort_retention",
    "churn_root_cause",
    "experience_recovery",
    "program_roi",
    "budget_reconciliation",
    "close_candidates",
    "reconciliation_exceptions",
    "fulfillment_sla",
];

/// A curated table as the report read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableVersion {
    pub name: String,
    /// The Delta version read.
    pub version: i64,
}

/// One value of a result: its exact text (`None` for NULL) and, for a numeric column, the number
/// a chart plots.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub text: Option<String>,
    pub number: Option<f64>,
}

impl Cell {
    /// The text, or an empty string for NULL.
    pub fn text(&self) -> &str {
        self.text.as_deref().unwrap_or("")
    }
}

/// A query's result, row by row.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Frame {
    /// The index of `column`; the report's own SQL names every column it reads.
    fn index(&self, column: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == column)
            .unwrap_or_else(|| panic!("the report's SQL has no column `{column}`"))
    }

    /// Column `column` of every row.
    pub fn column(&self, column: &str) -> Vec<&Cell> {
        let i = self.index(column);
        self.rows.iter().map(|r| &r[i]).collect()
    }

    /// Column `column` as text, NULL as an empty string.
    pub fn strings(&self, column: &str) -> Vec<String> {
        self.column(column)
            .iter()
            .map(|c| c.text().to_string())
            .collect()
    }

    /// Column `column` as numbers, `None` where NULL or not numeric.
    pub fn numbers(&self, column: &str) -> Vec<Option<f64>> {
        self.column(column).iter().map(|c| c.number).collect()
    }

    /// Row `row`'s `column`.
    pub fn get(&self, row: usize, column: &str) -> &Cell {
        &self.rows[row][self.index(column)]
    }

    /// The rows as text, NULL as `None`: the page's JSON island.
    pub fn texts(&self) -> Vec<Vec<Option<&str>>> {
        self.rows
            .iter()
            .map(|r| r.iter().map(|c| c.text.as_deref()).collect())
            .collect()
    }
}

/// The report's tables registered in one session, with their versions.
pub struct ReportTables {
    ctx: SessionContext,
    pub versions: Vec<TableVersion>,
}

impl ReportTables {
    /// Open every table of `TABLES` at its latest version; a table never published is an error
    /// that names it and the job to run.
    pub async fn open(ws: &Workspace) -> Result<ReportTables> {
        let mut providers: Vec<(String, Arc<dyn TableProvider>)> = Vec::new();
        let mut versions = Vec::new();
        for name in TABLES {
            let url = ws.table_url(name)?;
            let table = delta::open(&ws.engine.stores, &url)
                .await?
                .ok_or_else(|| Error::Export {
                    path: format!("report: {name}").into(),
                    message: format!(
                        "the report reads `{name}`, which has not been published yet; run `retention run --all` first"
                    ),
                    source: None,
                })?;
            versions.push(TableVersion {
                name: name.to_string(),
                version: table.version().unwrap_or_default() as i64,
            });
            providers.push((name.to_string(), delta::provider(&table).await?));
        }
        let ctx = ws.engine.session(&providers)?;
        Ok(ReportTables { ctx, versions })
    }

    /// Run `sql` with `params` bound (`$month`, ...) and read the result as a frame.
    pub async fn query(&self, sql: &str, params: &BTreeMap<&str, String>) -> Result<Frame> {
        let bound: Vec<(&str, ScalarValue)> = params
            .iter()
            .map(|(k, v)| (*k, ScalarValue::Utf8(Some(v.clone()))))
            .collect();
        let batches = self
            .ctx
            .sql(sql)
            .await?
            .with_param_values(ParamValues::from(bound))?
            .collect()
            .await?;
        frame(&batches)
    }
}

/// Batches as a frame: each value's display text (decimals with every digit) and, for numeric
/// columns, its value as f64.
pub fn frame(batches: &[RecordBatch]) -> Result<Frame> {
    let mut out = Frame::default();
    let Some(first) = batches.first() else {
        return Ok(out);
    };
    out.columns = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let options = FormatOptions::default();
    for batch in batches {
        let mut columns = Vec::new();
        for array in batch.columns() {
            let numbers = if array.data_type().is_numeric() {
                Some(cast(array, &DataType::Float64)?)
            } else {
                None
            };
            columns.push((ArrayFormatter::try_new(array, &options)?, array, numbers));
        }
        for row in 0..batch.num_rows() {
            let cells = columns
                .iter()
                .map(|(fmt, array, numbers)| {
                    if array.is_null(row) {
                        return Cell {
                            text: None,
                            number: None,
                        };
                    }
                    let number = numbers.as_ref().map(|n| {
                        n.as_any()
                            .downcast_ref::<datafusion::arrow::array::Float64Array>()
                            .expect("cast to Float64")
                            .value(row)
                    });
                    Cell {
                        text: Some(fmt.value(row).to_string()),
                        number,
                    }
                })
                .collect();
            out.rows.push(cells);
        }
    }
    Ok(out)
}
