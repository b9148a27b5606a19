//! `retention report`: one self-contained HTML page of charts for the retention lead, drawn from
//! the curated tables (`data`) as SVG (`chart`), figure by figure (`customers`, `spend`,
//! `service`), and laid out with its JSON island and footer (`page`). Written to a local folder or
//! to the curated store under `reports/`, in one atomic put either way.

pub mod chart;
pub mod customers;
pub mod data;
pub mod figure;
pub mod page;
pub mod service;
pub mod spend;

use std::path::{Path, PathBuf};

use object_store::{ObjectStoreExt, PutPayload};
use url::Url;

use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::report::data::{ReportTables, TableVersion};
use crate::report::figure::Params;
use crate::report::page::{Page, Section};
use crate::values::Month;

/// Folder of the reports under the curated root.
pub const REPORTS_DIR: &str = "reports";

/// A rendered report.
#[derive(Debug, Clone)]
pub struct Report {
    /// `retention_report_<YYYY-MM>.html` with `--month`, else `retention_report_<today>.html`.
    pub file_name: String,
    pub html: String,
    pub tables: Vec<TableVersion>,
}

/// Read the curated tables and render the page; `month` limits every figure to months up to it.
pub async fn build(ws: &Workspace, month: Option<&Month>) -> Result<Report> {
    let tables = ReportTables::open(ws).await?;
    let mut params = Params::new();
    // Months are `YYYY-MM` text, so a bound upper month compares as text.
    params.insert("month", month.map_or("9999-12".into(), |m| m.to_string()));
    let (budget, currency) = spend::budget(&tables, &params).await?;
    let sections = vec![
        Section {
            heading: "Retention and lifetime value",
            figures: vec![
                customers::retention_heatmap(&tables, &params).await?,
                customers::ltv_by_channel(&tables, &params, &currency).await?,
            ],
            listings: vec![],
        },
        Section {
            heading: "Churn and recovery",
            figures: vec![
                customers::churn_by_root_cause(&tables).await?,
                customers::recovery_by_issue(&tables, &params).await?,
            ],
            listings: vec![],
        },
        Section {
            heading: "Retention programs",
            figures: spend::program_returns(&tables, &params).await?,
            listings: vec![],
        },
        Section {
            heading: "Budget and month close",
            figures: budget,
            listings: spend::open_close_items(&tables, &params).await?,
        },
        Section {
            heading: "Service levels",
            figures: service::sla_trends(&tables, &params).await?,
            listings: vec![],
        },
    ];
    let now = ws.engine.clock.now();
    let page = Page {
        title: "Customer trust, recovery and retention".into(),
        month: month.map(ToString::to_string),
        generated_at: now,
        sections,
        tables: tables.versions.clone(),
    };
    let stem = month.map_or(now.format("%Y-%m-%d").to_string(), ToString::to_string);
    Ok(Report {
        file_name: format!("retention_report_{stem}.html"),
        html: page::render(&page),
        tables: tables.versions,
    })
}

/// Write the report into local folder `dir` (created if missing), atomically.
pub fn write_local(report: &Report, dir: &Path) -> Result<PathBuf> {
    crate::export::create_dir(dir)?;
    let path = dir.join(&report.file_name);
    crate::export::write_atomically(&path, report.html.as_bytes())?;
    Ok(path)
}

/// Put the report into the curated store under `reports/` (one put: whole or absent).
pub async fn publish(ws: &Workspace, report: &Report) -> Result<Url> {
    let root = &ws.engine.project.curated;
    let (store, base) = ws.engine.stores.store_for(root)?;
    let path = base.join(REPORTS_DIR).join(report.file_name.as_str());
    let url = root
        .join(&format!("{REPORTS_DIR}/{}", report.file_name))
        .map_err(|e| Error::Storage {
            location: root.to_string(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        })?;
    store
        .put(&path, PutPayload::from(report.html.clone().into_bytes()))
        .await
        .map_err(|e| Error::Storage {
            location: url.to_string(),
            message: format!("writing the report: {e}"),
            source: Some(Box::new(e)),
        })?;
    Ok(url)
}
