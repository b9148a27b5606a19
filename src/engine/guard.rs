//! The read-only guard for SQL from users (`retention query`, and the SQL servers of later
//! issues): DDL, DML (including `COPY ... TO`) and statements such as `SET` are refused before
//! anything runs.

use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Set, Statement};

use crate::error::{Error, Result};

/// What user SQL may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Queries only (the default).
    ReadOnly,
    /// Anything DataFusion accepts (`--allow-write`).
    ReadWrite,
}

impl Access {
    /// DataFusion's options for this access.
    pub fn sql_options(self) -> SQLOptions {
        match self {
            Access::ReadOnly => SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false),
            Access::ReadWrite => SQLOptions::new(),
        }
    }
}

/// Plan user SQL under `access`; a refused statement is `Error::ReadOnly`.
pub async fn plan_user_sql(ctx: &SessionContext, sql: &str, access: Access) -> Result<DataFrame> {
    ctx.sql_with_options(sql, access.sql_options())
        .await
        .map_err(read_only_or_datafusion)
}

/// As [`plan_user_sql`], with `WITH x AS MATERIALIZED (...)` honoured as in jobs
/// (engine/materialize.rs): each such CTE becomes a table of `ctx`, computed once. For a session
/// of one statement's own (`retention query`), not one a server shares between clients.
pub async fn plan_user_sql_materialized(
    ctx: &SessionContext,
    sql: &str,
    access: Access,
) -> Result<DataFrame> {
    let no_params = datafusion::common::ParamValues::List(vec![]);
    let plan = crate::engine::materialize::plan_sql(ctx, sql, &no_params, true)
        .await
        .map_err(read_only_or_datafusion)?;
    ctx.execute_logical_plan(verified(plan, access)?)
        .await
        .map_err(read_only_or_datafusion)
}

/// Plan one statement a SQL client sent (already parsed) under `access`, as `plan_user_sql`
/// does: a refused plan is `Error::ReadOnly`.
pub async fn plan_statement(
    state: &SessionState,
    statement: Statement,
    access: Access,
) -> Result<LogicalPlan> {
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(statement)))
        .await
        .map_err(read_only_or_datafusion)?;
    verified(plan, access)
}

/// `plan` if `access` allows it, else `Error::ReadOnly`.
fn verified(plan: LogicalPlan, access: Access) -> Result<LogicalPlan> {
    access
        .sql_options()
        .verify_plan(&plan)
        .map_err(read_only_or_datafusion)?;
    Ok(plan)
}

fn read_only_or_datafusion(e: DataFusionError) -> Error {
    match refused(&e) {
        Some(message) => Error::ReadOnly { message },
        None => Error::DataFusion(e),
    }
}

/// PostgreSQL's SQLSTATE for a write in a read-only transaction (`read_only_sql_transaction`).
pub const READ_ONLY_SQLSTATE: &str = "25006";
/// PostgreSQL's SQLSTATE for what no client may do (`insufficient_privilege`).
pub const PRIVILEGE_SQLSTATE: &str = "42501";
/// PostgreSQL's SQLSTATE for a feature the server lacks (`feature_not_supported`).
pub const UNSUPPORTED_SQLSTATE: &str = "0A000";

/// What the SQL servers do with a statement a client sent, before anything is planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStatement {
    /// A query (SELECT, EXPLAIN, SHOW TABLES, ...): planned with `plan_statement` under
    /// `Access::ReadOnly`, so a write hidden inside (EXPLAIN ANALYZE INSERT) is refused too.
    Query,
    /// A client's own session setting (`SET search_path`, `SET TIME ZONE`), `SHOW` of one, or
    /// transaction control: answered for that connection, never applied to the engine.
    Session,
    /// Refused with a PostgreSQL SQLSTATE and a message saying why.
    Refused {
        sqlstate: &'static str,
        message: String,
    },
}

/// Sort a client statement; everything that is not a query or a client setting is refused.
pub fn classify(statement: &Statement) -> ClientStatement {
    use ClientStatement::{Query, Refused, Session};
    match statement {
        Statement::Query(_)
        | Statement::Explain { .. }
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowFunctions { .. } => Query,
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Session,
        Statement::Set(set) => classify_set(set),
        Statement::Copy { .. } => Refused {
            sqlstate: PRIVILEGE_SQLSTATE,
            message: "COPY is not allowed: the SQL endpoint is read-only (`retention export` writes files)".into(),
        },
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => Refused {
            sqlstate: UNSUPPORTED_SQLSTATE,
            message: "cursors (DECLARE, FETCH, CLOSE) are not supported: results stream without them".into(),
        },
        other => Refused {
            sqlstate: READ_ONLY_SQLSTATE,
            message: format!(
                "cannot execute {} in a read-only session: the SQL endpoint serves the curated tables read-only",
                keyword(other)
            ),
        },
    }
}

/// `SET` of a client setting is the connection's own; `SET` of an engine option (a dotted name,
/// such as `datafusion.execution.batch_size`) is refused.
fn classify_set(set: &Set) -> ClientStatement {
    let names: Vec<String> = match set {
        Set::SingleAssignment { variable, .. } => vec![variable.to_string()],
        Set::MultipleAssignments { assignments } => {
            assignments.iter().map(|a| a.name.to_string()).collect()
        }
        _ => vec![],
    };
    match names.iter().find(|n| n.contains('.')) {
        Some(name) => ClientStatement::Refused {
            sqlstate: PRIVILEGE_SQLSTATE,
            message: format!(
                "SET {name}: engine settings cannot be changed over SQL (the endpoint is read-only)"
            ),
        },
        None => ClientStatement::Session,
    }
}

/// The statement's leading keywords, as PostgreSQL names them in errors: `CREATE TABLE`, `DROP
/// VIEW`, `INSERT`.
fn keyword(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default().to_ascii_uppercase();
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" => {
            const MODIFIERS: [&str; 7] = [
                "OR",
                "REPLACE",
                "TEMPORARY",
                "TEMP",
                "UNLOGGED",
                "GLOBAL",
                "LOCAL",
            ];
            match words
                .map(str::to_ascii_uppercase)
                .find(|w| !MODIFIERS.contains(&w.as_str()))
            {
                Some(object) => format!("{first} {object}"),
                None => first,
            }
        }
        _ => first,
    }
}

/// DataFusion's "... not supported" message when the options refused the statement.
fn refused(e: &DataFusionError) -> Option<String> {
    let text = e.to_string();
    [
        "DDL not supported",
        "DML not supported",
        "Statement not supported",
    ]
    .iter()
    .any(|m| text.contains(m))
    .then(|| {
        let m = crate::engine::job::strip_context(e);
        m.strip_prefix("Error during planning: ")
            .map(str::to_string)
            .unwrap_or(m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(sql: &str, access: Access) -> Result<usize> {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (x INT)").await.unwrap();
        let df = plan_user_sql(&ctx, sql, access).await?;
        let rows = df.collect().await?.iter().map(|b| b.num_rows()).sum();
        // The same statement through the planner that honours materialized CTEs.
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (x INT)").await.unwrap();
        let df = plan_user_sql_materialized(&ctx, sql, access).await?;
        let again: usize = df.collect().await?.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, again, "{sql}");
        Ok(rows)
    }

    #[tokio::test]
    async fn a_materialized_cte_in_user_sql_is_computed_once() {
        use datafusion::arrow::array::AsArray;
        // random() differs on every evaluation: equal values on both sides mean one computation.
        let sql = "WITH r AS MATERIALIZED (SELECT random() AS v)\n\
                   SELECT a.v = b.v AS same FROM r a CROSS JOIN r b";
        let ctx = SessionContext::new();
        let df = plan_user_sql_materialized(&ctx, sql, Access::ReadOnly)
            .await
            .unwrap();
        let batches = df.collect().await.unwrap();
        assert!(batches[0].column(0).as_boolean().value(0));
        // DataFusion's own planner does not parse the keyword.
        let err = plan_user_sql(&SessionContext::new(), sql, Access::ReadOnly)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("MATERIALIZED"), "{err}");
    }

    #[tokio::test]
    async fn read_only_refuses_writes_ddl_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.csv");
        let copy = format!("COPY (SELECT 1 AS a) TO '{}'", target.display());
        for sql in [
            copy.as_str(),
            "CREATE TABLE t AS SELECT 1",
            "CREATE VIEW v AS SELECT 1",
            "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/tmp/nowhere.csv'",
            "DROP TABLE t",
            "SET datafusion.execution.batch_size = 1",
            "INSERT INTO t VALUES (1)",
        ] {
            let e = run(sql, Access::ReadOnly).await.unwrap_err();
            assert!(matches!(e, Error::ReadOnly { .. }), "{sql}: {e}");
            assert!(e.to_string().contains(" not supported: "), "{sql}: {e}");
            assert_eq!(e.exit_code(), 2, "{sql}");
        }
        assert!(!target.exists(), "COPY wrote the file");
        assert_eq!(
            run("SELECT 1 UNION ALL SELECT 2", Access::ReadOnly)
                .await
                .unwrap(),
            2
        );
        // With write access the same COPY runs.
        run(&copy, Access::ReadWrite).await.unwrap();
        assert!(target.exists());
    }

    fn statement(sql: &str) -> Statement {
        use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
        use datafusion::sql::sqlparser::parser::Parser;
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_statement()
            .unwrap()
    }

    fn refused(sql: &str) -> (&'static str, String) {
        match classify(&statement(sql)) {
            ClientStatement::Refused { sqlstate, message } => (sqlstate, message),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn client_statements_are_sorted_before_planning() {
        for sql in [
            "SELECT 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "EXPLAIN SELECT 1",
            "SHOW TABLES",
        ] {
            assert_eq!(classify(&statement(sql)), ClientStatement::Query, "{sql}");
        }
        for sql in [
            "SET search_path = public",
            "SET TIME ZONE 'UTC'",
            "SET extra_float_digits = 3",
            "SHOW server_version",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT sa_savepoint_1",
            "RELEASE SAVEPOINT sa_savepoint_1",
        ] {
            assert_eq!(classify(&statement(sql)), ClientStatement::Session, "{sql}");
        }
        assert_eq!(
            refused("CREATE TABLE t (x INT)"),
            (
                "25006",
                "cannot execute CREATE TABLE in a read-only session: the SQL endpoint serves the curated tables read-only".into()
            )
        );
        assert_eq!(
            refused("CREATE OR REPLACE VIEW v AS SELECT 1").1[..26],
            *"cannot execute CREATE VIEW"
        );
        assert_eq!(
            refused("DROP TABLE IF EXISTS t").1[..25],
            *"cannot execute DROP TABLE"
        );
        assert_eq!(
            refused("INSERT INTO t VALUES (1)").1[..21],
            *"cannot execute INSERT"
        );
        assert_eq!(refused("COPY t TO '/tmp/x.csv'").0, "42501");
        assert_eq!(
            refused("SET datafusion.execution.batch_size = 1"),
            (
                "42501",
                "SET datafusion.execution.batch_size: engine settings cannot be changed over SQL (the endpoint is read-only)".into()
            )
        );
        assert_eq!(refused("DECLARE c CURSOR FOR SELECT 1").0, "0A000");
    }

    #[tokio::test]
    async fn a_write_inside_a_query_statement_is_refused_by_the_plan_check() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (x INT)").await.unwrap();
        let explain = statement("EXPLAIN ANALYZE INSERT INTO t VALUES (1)");
        assert_eq!(classify(&explain), ClientStatement::Query);
        let e = plan_statement(&ctx.state(), explain, Access::ReadOnly)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::ReadOnly { .. }), "{e}");
        let plan = plan_statement(
            &ctx.state(),
            statement("SELECT count(*) FROM t"),
            Access::ReadOnly,
        )
        .await
        .unwrap();
        assert_eq!(plan.schema().fields().len(), 1);
    }
}
