//! What commands print on stdout: batches as a table, CSV or JSON, and a run's summary table.

use clap::ValueEnum;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use datafusion::arrow;
use datafusion::arrow::array::RecordBatch;

use crate::error::Result;
use crate::execute::JobOutcome;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// One row per job: status, rows written, seconds, peak memory, spilled bytes, version and error.
pub fn print_summary(run_id: &str, outcomes: &[JobOutcome]) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "job",
        "status",
        "rows",
        "seconds",
        "peak MiB",
        "spilled MiB",
        "version",
        "error",
    ]);
    let held = |bytes: Option<i64>| bytes.map(|b| mib(b.max(0) as u64)).unwrap_or_default();
    for o in outcomes {
        t.add_row(vec![
            o.job.clone(),
            o.status.to_string(),
            o.rows_written.to_string(),
            format!("{:.2}", o.seconds),
            held(o.peak_memory_bytes),
            held(o.spilled_bytes),
            o.output_version.map(|v| v.to_string()).unwrap_or_default(),
            o.error.clone().unwrap_or_default(),
        ]);
    }
    println!("run {run_id}\n{t}");
}

/// Print batches as a table, CSV or JSON (one array of objects) on stdout.
pub fn print_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<()> {
    match format {
        OutputFormat::Table => {
            println!("{}", arrow::util::pretty::pretty_format_batches(batches)?);
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(std::io::stdout());
            for b in batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::ArrayWriter::new(std::io::stdout());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            println!();
        }
    }
    Ok(())
}

/// `bytes` in MiB with one decimal, as every command prints sizes.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1 << 20))
}
