//! The project's own jobs: SQL unit tests (tests/sql/*.slt) on hand-made rows, one test per
//! file, named after it: a failure names its file, and `cargo test --test sql churn_rate` runs
//! one. A job without its file is a failing test named after the missing file.

mod common;

use std::path::{Path, PathBuf};

use common::repository_workspace;
use libtest_mimic::{Arguments, Failed, Trial};

/// Run one file on its own workspace and runtime, as `retention test` does.
fn run(file: &Path) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ws = repository_workspace();
        retention::sqltest::run_file(ws, file, false)
            .await
            .map_err(Failed::from)
    })
}

fn main() {
    let args = Arguments::from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let files = retention::sqltest::test_files(std::slice::from_ref(&dir)).unwrap();
    let name = |f: &PathBuf| f.file_name().unwrap().to_string_lossy().into_owned();
    let mut trials: Vec<Trial> = files
        .iter()
        .map(|f| {
            let file = f.clone();
            Trial::test(name(f), move || run(&file))
        })
        .collect();
    // Every job has its SQL test file.
    let ws = repository_workspace();
    for node in &ws.graph.nodes {
        let job = node.spec.name.clone();
        let file = format!("{job}.slt");
        if !files.iter().any(|f| f.ends_with(&file)) {
            trials.push(Trial::test(file.clone(), move || {
                Err(format!("job `{job}` has no tests/sql/{file}").into())
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
