//! The read-only guard for SQL from users (`retention query`, and the SQL servers of later
//! issues): DDL, DML (including `COPY ... TO`) and statements such as `SET` are refused before
//! anything runs.

use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionContext};

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
        .map_err(|e| match refused(&e) {
            Some(message) => Error::ReadOnly { message },
            None => Error::DataFusion(e),
        })
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
        Ok(df.collect().await?.iter().map(|b| b.num_rows()).sum())
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
}
