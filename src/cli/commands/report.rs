//! `retention report`: the retention lead's page of charts, written to a local folder (`--out`)
//! or to the curated store under `reports/`.

use std::path::PathBuf;

use clap::Args;

use crate::error::Result;
use crate::plan::workspace::Workspace;
use crate::values::Month;

pub const EXAMPLES: &str = "Examples:\n  retention report --out .               # ./retention_report_<today>.html\n  retention report --month 2026-09 --out reports\n  retention report                       # into the curated store, under reports/";

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Write into this local folder instead of the curated store's `reports/`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Show months up to this one (YYYY-MM); every month published when absent.
    #[arg(long, value_parser = crate::cli::args::month)]
    pub month: Option<Month>,
}

pub async fn run(ws: &Workspace, args: ReportArgs) -> Result<()> {
    let report = crate::report::build(ws, args.month.as_ref()).await?;
    let place = match &args.out {
        Some(dir) => crate::report::write_local(&report, dir)?
            .display()
            .to_string(),
        None => crate::report::publish(ws, &report).await?.to_string(),
    };
    let tables: Vec<String> = report
        .tables
        .iter()
        .map(|t| format!("{} v{}", t.name, t.version))
        .collect();
    println!("wrote {place} (from {})", tables.join(", "));
    Ok(())
}
