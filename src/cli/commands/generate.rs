//! `retention generate`: a deterministic synthetic marketplace written as raw Parquet sources,
//! in one go or extended day by day with `--through`.

use clap::Args;

use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, existing_lake, extend, generate};
use crate::project::config::Project;
use crate::project::location::parse_location;
use crate::store::Stores;

pub const EXAMPLES: &str = "Examples:\n  retention generate\n  retention generate --customers 100000 --months 24 --seed 7\n  retention generate --out s3://bucket/raw\n  retention generate --through 2025-06-30   # the first days only; run again with a later day to append\n  retention generate --plant-bgnbd 0.6,40,0.8,2.4   # customers who follow BG/NBD exactly";

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Random seed [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Customers who sign up over the period [default: 20000].
    #[arg(long)]
    pub customers: Option<u64>,
    /// Months of the period [default: 24].
    #[arg(long)]
    pub months: Option<u32>,
    /// First day of the data (YYYY-MM-DD) [default: 2024-11-01].
    #[arg(long)]
    pub start: Option<chrono::NaiveDate>,
    /// Last day to write (YYYY-MM-DD; default: the period's last day). On a lake generated
    /// through an earlier day, appends the days after it: the same files as one go would write.
    #[arg(long)]
    pub through: Option<chrono::NaiveDate>,
    /// Where to write (default: the project's raw root).
    #[arg(long)]
    pub out: Option<String>,
    /// Ledger lines per booked spend entry (finance volume) [default: 1].
    #[arg(long)]
    pub ledger_lines: Option<usize>,
    /// Customers who buy exactly as BG/NBD says, `r,alpha_days,a,b` (for example 0.6,40,0.8,2.4):
    /// ground truth for the CLV fit, recorded in truth.json as planted_bgnbd.
    #[arg(long, value_name = "R,ALPHA_DAYS,A,B")]
    pub plant_bgnbd: Option<crate::generate::PlantedBgNbd>,
}

impl GenerateArgs {
    /// The options given, over `base`.
    fn options(&self, base: &GenerateOptions) -> GenerateOptions {
        GenerateOptions {
            seed: self.seed.unwrap_or(base.seed),
            customers: self.customers.unwrap_or(base.customers),
            months: self.months.unwrap_or(base.months),
            start: self.start.unwrap_or(base.start),
            ledger_lines: self.ledger_lines.unwrap_or(base.ledger_lines),
            bgnbd: self.plant_bgnbd.or(base.bgnbd),
        }
    }
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
    let clock = std::time::Instant::now();
    let existing = match args.through {
        Some(_) => existing_lake(stores, &root).await?,
        None => None,
    };
    let g = match (existing, args.through) {
        (Some((lake, end)), Some(through)) => {
            if args.options(&lake) != lake {
                return Err(Error::Argument {
                    flag: "--through",
                    key: "through".into(),
                    message: format!(
                        "the lake at {root} (through {end}) was generated with {lake:?}; \
                         extend it without other generator options, or --out elsewhere"
                    ),
                });
            }
            extend(stores, &root, through).await?
        }
        _ => {
            let opts = args.options(&GenerateOptions::default());
            generate(stores, &root, &opts, args.through).await?
        }
    };
    for (table, rows) in &g.tables {
        println!("{table}: {rows} rows");
    }
    println!(
        "written to {root} through {} in {:.1}s",
        g.truth.end,
        clock.elapsed().as_secs_f64()
    );
    Ok(())
}
