//! What PostgreSQL clients send that DataFusion and datafusion-postgres do not answer as is: the
//! rewrites of their catalog queries (psql's `\d+`, `\dt+`: `obj_description` and
//! `col_description` become lookups of `pg_catalog.pg_description`) and the PostgreSQL functions
//! they call that datafusion-postgres lacks.

use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_int64_array;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Query, Statement, Value,
    visit_expressions, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Rewrite one client statement before it is classified and planned.
pub fn rewrite(mut statement: Statement) -> Statement {
    let _ = visit_expressions_mut(&mut statement, |expr| {
        if let Some(replacement) = description_lookup(expr).or_else(|| no_reloptions(expr)) {
            *expr = replacement;
        }
        ControlFlow::<()>::Continue(())
    });
    statement
}

/// The lookup an `obj_description` / `col_description` call becomes; `__objoid` and
/// `__objsubid` are replaced by the call's arguments.
static LOOKUP: LazyLock<Query> = LazyLock::new(|| {
    let sql = "SELECT max(description) FROM pg_catalog.pg_description WHERE objoid = __objoid AND objsubid = __objsubid";
    *Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
        .expect("the lookup template parses")
});

/// `obj_description(oid[, catalog])` and `col_description(oid, attnum)` as scalar subqueries
/// over `pg_catalog.pg_description`; `None` for any other expression.
pub fn description_lookup(expr: &Expr) -> Option<Expr> {
    let (name, args) = crate::sql_server::compat::function_call(expr)?;
    let zero = Expr::value(Value::Number("0".into(), false));
    let (objoid, objsubid) = match (name.as_str(), args.as_slice()) {
        ("obj_description", [oid] | [oid, _]) => (oid.clone(), zero),
        ("col_description", [oid, attnum]) => (oid.clone(), attnum.clone()),
        _ => return None,
    };
    let mut query = LOOKUP.clone();
    let _ = visit_expressions_mut(&mut query, |e| {
        if let Expr::Identifier(id) = e {
            match id.value.as_str() {
                "__objoid" => *e = Expr::Nested(Box::new(objoid.clone())),
                "__objsubid" => *e = Expr::Nested(Box::new(objsubid.clone())),
                _ => {}
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Some(Expr::Subquery(Box::new(query)))
}

/// psql's `\d+` lists a table's storage options with `array_to_string(c.reloptions ||
/// array(select ... unnest(tc.reloptions) ...), ', ')`. Curated tables have none, and
/// datafusion-postgres's `pg_class` has no `reloptions`: the call becomes `''`.
fn no_reloptions(expr: &Expr) -> Option<Expr> {
    let (name, args) = function_call(expr)?;
    (name == "array_to_string" && args.first().is_some_and(mentions_reloptions))
        .then(|| Expr::value(Value::SingleQuotedString(String::new())))
}

/// A call's function name (last part, lower case) and its arguments, when every argument is a
/// plain positional expression; `None` for anything else.
pub fn function_call(expr: &Expr) -> Option<(String, Vec<Expr>)> {
    let Expr::Function(f) = expr else {
        return None;
    };
    let name = f.name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let args = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect::<Option<Vec<Expr>>>()?;
    Some((name, args))
}

fn mentions_reloptions(expr: &Expr) -> bool {
    let found = visit_expressions(expr, |e| match e {
        Expr::CompoundIdentifier(parts)
            if parts.last().is_some_and(|p| p.value == "reloptions") =>
        {
            ControlFlow::Break(())
        }
        Expr::Identifier(p) if p.value == "reloptions" => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    found.is_break()
}

/// PostgreSQL functions psql and BI tools call that datafusion-postgres does not define.
pub fn register_functions(ctx: &SessionContext) {
    for f in [pg_table_size(), pg_size_pretty(), version(), to_regtype()] {
        ctx.register_udf(f);
    }
}

/// `version()` as PostgreSQL words it, which drivers parse (SQLAlchemy reads the major and minor
/// version from it): the PostgreSQL version pgwire announces, then what actually answers.
fn version() -> ScalarUDF {
    let text = format!(
        "PostgreSQL 16.6 (retention {} on Apache DataFusion {})",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::Utf8(Some(text.clone())),
            ))
        }),
    )
}

/// `to_regtype(name)`: NULL, the answer for a type the server does not have. Drivers ask it for
/// extension types (psycopg and SQLAlchemy look up `hstore`); curated tables use none.
fn to_regtype() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = ColumnarValue::values_to_arrays(args)?[0].len();
            Ok(ColumnarValue::Array(Arc::new(
                datafusion::arrow::array::Int32Array::new_null(rows),
            )))
        }),
    )
}

/// `pg_table_size(oid)`: unknown (NULL); a Delta table's size is not a PostgreSQL relation's.
fn pg_table_size() -> ScalarUDF {
    create_udf(
        "pg_table_size",
        vec![DataType::Int32],
        DataType::Int64,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = ColumnarValue::values_to_arrays(args)?[0].len();
            Ok(ColumnarValue::Array(Arc::new(Int64Array::new_null(rows))))
        }),
    )
}

/// `pg_size_pretty(bigint)`, as PostgreSQL writes sizes: `9 bytes`, `12 kB`, `3 MB`.
fn pg_size_pretty() -> ScalarUDF {
    create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let sizes = as_int64_array(&arrays[0])?;
            let text: StringArray = sizes.iter().map(|s| s.map(size_pretty)).collect();
            Ok(ColumnarValue::Array(Arc::new(text) as ArrayRef))
        }),
    )
}

/// PostgreSQL's `pg_size_pretty`: bytes below 10240, else the largest unit keeping the value
/// below 20480 half-units, rounded half away from zero.
fn size_pretty(size: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    if size.abs() < LIMIT {
        return format!("{size} bytes");
    }
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    // One extra bit is kept for rounding.
    let mut value = size >> 9;
    for unit in ["kB", "MB", "GB", "TB"] {
        if value.abs() < LIMIT * 2 - 1 {
            return format!("{} {unit}", half_rounded(value));
        }
        value >>= 10;
    }
    format!("{} PB", half_rounded(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    #[test]
    fn sizes_are_written_as_postgresql_writes_them() {
        // Expected values: PostgreSQL 15's pg_size_pretty.
        assert_eq!(size_pretty(0), "0 bytes");
        assert_eq!(size_pretty(10239), "10239 bytes");
        assert_eq!(size_pretty(10240), "10 kB");
        assert_eq!(size_pretty(1_000_000), "977 kB");
        assert_eq!(size_pretty(123_456_789), "118 MB");
        assert_eq!(size_pretty(-10240), "-10 kB");
    }

    #[test]
    fn psqls_storage_options_become_an_empty_string() {
        let sql = "SELECT c.relchecks, pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ') FROM pg_catalog.pg_class c";
        let statement = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_statement()
            .unwrap();
        assert_eq!(
            rewrite(statement).to_string(),
            "SELECT c.relchecks, '' FROM pg_catalog.pg_class c"
        );
    }

    fn rewritten(sql: &str) -> String {
        let statement = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_statement()
            .unwrap();
        crate::sql_server::compat::rewrite(statement).to_string()
    }

    #[test]
    fn description_functions_become_lookups_of_pg_description() {
        assert_eq!(
            rewritten("SELECT pg_catalog.obj_description(c.oid, 'pg_class') FROM pg_class c"),
            "SELECT (SELECT max(description) FROM pg_catalog.pg_description WHERE objoid = (c.oid) AND objsubid = (0)) FROM pg_class c"
        );
        assert_eq!(
            rewritten("SELECT col_description(a.attrelid, a.attnum) AS d FROM pg_attribute a"),
            "SELECT (SELECT max(description) FROM pg_catalog.pg_description WHERE objoid = (a.attrelid) AND objsubid = (a.attnum)) AS d FROM pg_attribute a"
        );
        // Anything else is left alone.
        assert_eq!(
            rewritten("SELECT lower(x) FROM t"),
            "SELECT lower(x) FROM t"
        );
    }
}
