//! `retention test`: the SQL unit tests, each `.slt` file run against the project's jobs.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::sqltest;

pub const EXAMPLES: &str = "Examples:\n  retention test\n  retention test tests/sql/order_experience.slt\n  retention test --complete   # rewrite expected results from what the jobs return";

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files or directories (default: tests/sql under the project).
    pub paths: Vec<PathBuf>,
    /// Rewrite each file's expected results with the actual ones.
    #[arg(long)]
    pub complete: bool,
}

pub async fn run(ws: Workspace, args: TestArgs) -> Result<()> {
    let paths = if args.paths.is_empty() {
        vec![ws.engine.project.root.join("tests/sql")]
    } else {
        args.paths
    };
    let ws = Arc::new(ws);
    let files = sqltest::test_files(&paths)?;
    let mut failed = 0;
    for f in &files {
        match sqltest::run_file(ws.clone(), f, args.complete).await {
            Ok(()) => println!("ok      {}", f.display()),
            Err(e) => {
                failed += 1;
                println!("FAILED  {}\n{}", f.display(), crate::redact::redact(&e));
            }
        }
    }
    println!("{} passed, {failed} failed", files.len() - failed);
    if failed > 0 {
        return Err(Error::SqlTests { failed });
    }
    Ok(())
}
