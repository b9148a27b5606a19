//! `retention generate`: a deterministic synthetic marketplace written as raw Parquet sources.

use clap::Args;

use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, generate};
use crate::project::config::Project;
use crate::project::location::parse_location;
use crate::store::Stores;

pub const EXAMPLES: &str = "Examples:\n  retention generate\n  retention generate --customers 100000 --months 24 --seed 7\n  retention generate --out s3://bucket/raw\n  retention generate --plant-bgnbd 0.6,40,0.8,2.4   # customers who follow BG/NBD exactly";

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 20_000)]
    pub customers: u64,
    #[arg(long, default_value_t = 24)]
    pub months: u32,
    /// First day of the data (YYYY-MM-DD).
    #[arg(long, default_value = "2024-11-01")]
    pub start: chrono::NaiveDate,
    /// Where to write (default: the project's raw root).
    #[arg(long)]
    pub out: Option<String>,
    /// Ledger lines per booked spend entry (finance volume).
    #[arg(long, default_value_t = 1)]
    pub ledger_lines: usize,
    /// Customers who buy exactly as BG/NBD says, `r,alpha_days,a,b` (for example 0.6,40,0.8,2.4):
    /// ground truth for the CLV fit, recorded in truth.json as planted_bgnbd.
    #[arg(long, value_name = "R,ALPHA_DAYS,A,B")]
    pub plant_bgnbd: Option<crate::generate::PlantedBgNbd>,
}

pub async fn run(project: &Project, stores: &Stores, args: &GenerateArgs) -> Result<()> {
    let root = match &args.out {
        Some(o) => parse_location(&project.root, o).map_err(|message| Error::Argument {
            flag: "--out",
            key: "out".into(),
            message,
        })?,
        None => project.raw.clone(),
    };
    let opts = GenerateOptions {
        seed: args.seed,
        customers: args.customers,
        months: args.months,
        start: args.start,
        ledger_lines: args.ledger_lines,
        bgnbd: args.plant_bgnbd,
    };
    let clock = std::time::Instant::now();
    let g = generate(stores, &root, &opts).await?;
    for (table, rows) in &g.tables {
        println!("{table}: {rows} rows");
    }
    println!("written to {root} in {:.1}s", clock.elapsed().as_secs_f64());
    Ok(())
}
