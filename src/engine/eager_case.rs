//! A searched `CASE` whose conditions and values are plain columns, literals and comparisons,
//! planned as `eager_case(when1, then1, ..., [else])`: every condition and value is evaluated on
//! the whole batch, each row's branch is found from the conditions' bits, and the result is taken
//! from the branches' values in one pass (`interleave`).
//!
//! DataFusion 55 evaluates a `CASE` of several branches by filtering: each branch copies the rows
//! no earlier branch took, every column the `CASE` reads, so that a `THEN` is computed only on
//! its own rows. That guards an expensive or failing `THEN` (a division by zero elsewhere), but
//! when nothing in the `CASE` can fail or costs more than a copy the filters are the whole cost:
//! order_experience's `issue_ts` (seven branches over twelve columns, most rows taking none) cost
//! 228 ns a row. The rule leaves every other `CASE` to DataFusion: one with a function, a cast,
//! arithmetic or a subquery anywhere in it, a `CASE x WHEN ...`, a single branch without `ELSE`
//! or with two literals (DataFusion's own fast paths), values of differing types, and one whose
//! nullability DataFusion derives more narrowly than "no `ELSE`, or a nullable value".

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::cast::as_boolean_array;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Case, ColumnarValue, Expr, ExprSchemable, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The function's name, as plans show it.
pub const NAME: &str = "eager_case";

/// `eager_case(when1, then1, ..., whenN, thenN[, else])`: the first value whose condition is
/// true (a null condition is false), else the `else` value, else null.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct EagerCase {
    signature: Signature,
}

impl Default for EagerCase {
    fn default() -> Self {
        EagerCase {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for EagerCase {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.get(1) {
            Some(value) => Ok(value.clone()),
            None => exec_err!("{NAME} takes a condition and a value at least"),
        }
    }

    /// Null where no branch is taken and there is no `else`, or where the value taken is.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let fields = args.arg_fields;
        let Some(first) = fields.get(1) else {
            return exec_err!("{NAME} takes a condition and a value at least");
        };
        let has_else = fields.len() % 2 == 1;
        let nullable = !has_else || values(fields).any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            NAME,
            first.data_type().clone(),
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let branches = args.args.len() / 2;
        let (conditions, values): (Vec<_>, Vec<_>) = args.args[..branches * 2]
            .chunks(2)
            .map(|branch| (&branch[0], &branch[1]))
            .unzip();
        let taken = branches_taken(&conditions, rows)?;
        // The values as arrays, a scalar as one row; then the else value, or a null.
        let mut arrays = Vec::with_capacity(branches + 1);
        let mut scalar = Vec::with_capacity(branches + 1);
        let otherwise = match args.args.len() % 2 {
            1 => args.args[args.args.len() - 1].clone(),
            _ => ColumnarValue::Scalar(ScalarValue::try_from(args.return_field.data_type())?),
        };
        for value in values.into_iter().chain([&otherwise]) {
            scalar.push(matches!(value, ColumnarValue::Scalar(_)));
            arrays.push(match value {
                ColumnarValue::Array(array) => Arc::clone(array),
                ColumnarValue::Scalar(value) => value.to_array_of_size(1)?,
            });
        }
        let rows_taken: Vec<(usize, usize)> = taken
            .iter()
            .enumerate()
            .map(|(row, &b)| {
                let b = b as usize;
                (b, if scalar[b] { 0 } else { row })
            })
            .collect();
        let arrays: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
        Ok(ColumnarValue::Array(interleave(&arrays, &rows_taken)?))
    }
}

/// Each row's branch: the first whose condition is true (a null one is false), or the number of
/// branches where none is. Set last branch first, so that an earlier one overwrites it.
fn branches_taken(conditions: &[&ColumnarValue], rows: usize) -> Result<Vec<u32>> {
    let mut taken = vec![conditions.len() as u32; rows];
    for (branch, condition) in conditions.iter().enumerate().rev() {
        match condition {
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))) => taken.fill(branch as u32),
            ColumnarValue::Scalar(_) => {}
            ColumnarValue::Array(array) => {
                let condition = as_boolean_array(array)?;
                let truth = match condition.nulls() {
                    Some(valid) => condition.values() & valid.inner(),
                    None => condition.values().clone(),
                };
                for row in truth.set_indices() {
                    taken[row] = branch as u32;
                }
            }
        }
    }
    Ok(taken)
}

/// The value arguments' fields: every second one, and the `else` after them.
fn values(fields: &[FieldRef]) -> impl Iterator<Item = &FieldRef> {
    fields
        .iter()
        .enumerate()
        .filter(move |(i, _)| i % 2 == 1 || *i == fields.len() - 1)
        .map(|(_, f)| f)
}

/// The function, as sessions (and workers) register it.
pub fn udf() -> ScalarUDF {
    ScalarUDF::from(EagerCase::default())
}

/// The logical optimizer rule: a searched `CASE` of columns and comparisons planned as
/// `eager_case(...)`.
pub fn rule() -> crate::engine::rewrite::FunctionRule {
    crate::engine::rewrite::FunctionRule::new("eager_cases", udf(), to_eager_case)
}

/// `e` as `eager_case(...)` when it is a searched `CASE` the function computes as DataFusion
/// would: nothing in it can fail, every value has the `CASE`'s type, and the nullability is the
/// same.
fn to_eager_case(e: Expr, input: &DFSchema, udf: &Arc<ScalarUDF>) -> Result<Transformed<Expr>> {
    let Expr::Case(Case {
        expr: None,
        when_then_expr,
        else_expr,
    }) = &e
    else {
        return Ok(Transformed::no(e));
    };
    let literal = |e: &Expr| matches!(e, Expr::Literal(..));
    let own_fast_path = match (when_then_expr.as_slice(), else_expr) {
        ([_], None) => true,
        ([(_, then)], Some(other)) => literal(then) && literal(other),
        _ => false,
    };
    let parts = || {
        when_then_expr
            .iter()
            .flat_map(|(when, then)| [when.as_ref(), then.as_ref()])
            .chain(else_expr.as_deref())
    };
    if own_fast_path || !parts().all(infallible) {
        return Ok(Transformed::no(e));
    }
    let case_type = e.get_type(input)?;
    for (when, then) in when_then_expr {
        if when.get_type(input)? != DataType::Boolean || then.get_type(input)? != case_type {
            return Ok(Transformed::no(e));
        }
    }
    if let Some(other) = else_expr
        && other.get_type(input)? != case_type
    {
        return Ok(Transformed::no(e));
    }
    let call = udf.call(parts().cloned().collect());
    if call.nullable(input)? != e.nullable(input)? {
        return Ok(Transformed::no(e));
    }
    Ok(Transformed::yes(call))
}

/// Whether `e` is a column, a literal, or a comparison, test or boolean combination of such:
/// nothing that can fail on a row no branch takes, or costs more than a pass over a column.
fn infallible(e: &Expr) -> bool {
    match e {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::Not(x)
        | Expr::IsNull(x)
        | Expr::IsNotNull(x)
        | Expr::IsTrue(x)
        | Expr::IsFalse(x)
        | Expr::IsNotTrue(x)
        | Expr::IsNotFalse(x)
        | Expr::IsUnknown(x)
        | Expr::IsNotUnknown(x) => infallible(x),
        Expr::BinaryExpr(b) => {
            use Operator::*;
            matches!(
                b.op,
                Eq | NotEq | Lt | LtEq | Gt | GtEq | And | Or | IsDistinctFrom | IsNotDistinctFrom
            ) && infallible(&b.left)
                && infallible(&b.right)
        }
        Expr::ScalarFunction(ScalarFunction { func, args }) => {
            func.name() == NAME && args.iter().all(infallible)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    fn session(rewrite: bool) -> SessionContext {
        crate::engine::rewrite::test_session(Some(rule()).filter(|_| rewrite))
    }

    /// Orders with flags that may be null, a decimal amount, a timestamp, and a divisor that is
    /// zero on rows where it is not used.
    const ORDERS: &str = "CREATE TABLE orders AS SELECT id, lost, late, \
        CAST(amount AS DECIMAL(10,2)) AS amount, ts, divisor, region FROM (VALUES \
        (1, true,  false, '10.50', TIMESTAMP '2026-01-01 10:00:00', 2, 'b'), \
        (2, false, true,  '20.25', TIMESTAMP '2026-01-02 11:00:00', 0, 'a'), \
        (3, NULL,  true,  '30.00', TIMESTAMP '2026-01-03 12:00:00', 4, 'c'), \
        (4, false, NULL,  '40.75', NULL,                            0, NULL), \
        (5, NULL,  NULL,  NULL,    TIMESTAMP '2026-01-05 14:00:00', 5, 'a')) \
        AS t(id, lost, late, amount, ts, divisor, region)";

    const QUERY: &str = "SELECT id, \
          CASE WHEN lost THEN 'lost' WHEN late THEN 'late' WHEN region = 'a' THEN 'a' \
               ELSE 'none' END AS issue, \
          CASE WHEN lost THEN ts WHEN late AND region >= 'b' THEN ts END AS issue_ts, \
          CASE WHEN lost IS NULL THEN amount WHEN NOT late THEN amount \
               ELSE CAST(0 AS DECIMAL(4,2)) END AS kept, \
          sum(CASE WHEN late THEN amount WHEN lost THEN amount END) OVER () AS flagged, \
          CASE WHEN divisor > 0 THEN 100 / divisor WHEN late THEN -1 END AS share, \
          CASE WHEN late THEN CASE WHEN region = 'a' THEN 1 WHEN region = 'c' THEN 3 END \
               ELSE 0 END AS nested, \
          CASE WHEN lost THEN 1 WHEN late THEN 2 END \
        FROM orders ORDER BY id";

    async fn run(rewrite: bool) -> (String, String) {
        let ctx = session(rewrite);
        ctx.sql(ORDERS).await.unwrap().collect().await.unwrap();
        let df = ctx.sql(QUERY).await.unwrap();
        let plan = df.clone().into_optimized_plan().unwrap();
        let batches = df.collect().await.unwrap();
        (
            plan.display_indent().to_string(),
            pretty_format_batches(&batches).unwrap().to_string(),
        )
    }

    #[tokio::test]
    async fn cases_of_columns_are_eager_with_the_same_names_and_rows() {
        let (plain_plan, plain) = run(false).await;
        let (plan, eager) = run(true).await;
        assert!(!plain_plan.contains(NAME), "{plain_plan}");
        // The same rows under the same names (the last column's is the CASE's own text).
        assert_eq!(plain, eager);
        assert!(
            eager.contains("| CASE WHEN orders.lost THEN Int64(1)"),
            "{eager}"
        );
        // issue, issue_ts, kept, the windowed sum's argument, nested (inner and outer) and the
        // last; not share, whose THEN divides.
        assert_eq!(plan.matches("eager_case(").count(), 7, "{plan}");
        let expected = [
            "| id | issue | issue_ts            | kept  | flagged | share | nested |",
            "| 1  | lost  | 2026-01-01T10:00:00 | 10.50 | 60.75   | 50    | 0      |",
            "| 2  | late  |                     | 0.00  | 60.75   | -1    | 1      |",
            "| 3  | late  | 2026-01-03T12:00:00 | 30.00 | 60.75   | 25    | 3      |",
            "| 4  | none  |                     | 0.00  | 60.75   |       | 0      |",
            "| 5  | a     |                     |       | 60.75   | 20    | 0      |",
        ];
        // The table without its border lines and its last column.
        let rows: Vec<String> = eager
            .lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').collect();
                format!("{}|", cells[..cells.len() - 2].join("|"))
            })
            .collect();
        assert_eq!(rows, expected, "{eager}");
        let last: Vec<&str> = eager
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(1)
            .map(|l| l.rsplit('|').nth(1).unwrap().trim())
            .collect();
        assert_eq!(last, ["1", "2", "2", "", ""]);
    }

    #[tokio::test]
    async fn the_function_takes_the_first_true_branch_and_treats_null_as_false() {
        let ctx = session(true);
        let batches = ctx
            .sql(
                "SELECT eager_case(a, 'x', b, 'y', 'z') AS e, eager_case(a, 1, b, 2) AS f FROM \
                 (VALUES (true, true), (NULL, true), (false, NULL), (NULL, NULL)) AS t(a, b)",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let shown = pretty_format_batches(&batches).unwrap().to_string();
        let expected = [
            "+---+---+",
            "| e | f |",
            "+---+---+",
            "| x | 1 |",
            "| y | 2 |",
            "| z |   |",
            "| z |   |",
            "+---+---+",
        ];
        assert_eq!(shown.lines().collect::<Vec<_>>(), expected, "{shown}");
    }
}
