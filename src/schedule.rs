//! The scheduler (`retention schedule`): every job with a `schedule` runs on it (cron, seconds
//! first, UTC) under tokio-cron-scheduler. Jobs sharing a schedule run together as one run in
//! dependency order, with trigger `schedule`; a firing that finds the previous run of the same
//! schedule still going is skipped with a warning. `--dry-run` lists the firings of a window,
//! computed with the same cron parser.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::error::{Error, Result};
use crate::execute;
use crate::plan::workspace::Workspace;
use crate::project::spec;
use crate::values::Trigger;

/// Jobs grouped by their schedule expression, each group in dependency order.
pub fn groups(ws: &Workspace) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &ws.graph.nodes {
        if let Some(expr) = &n.spec.schedule {
            out.entry(expr.clone())
                .or_default()
                .push(n.spec.name.clone());
        }
    }
    out
}

/// Every firing in `[from, to)`: the instant and the jobs due then, in time order (jobs of
/// different schedules due at the same instant are listed together).
pub fn firings(
    ws: &Workspace,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Vec<String>)>> {
    let mut due: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
    for (expr, jobs) in groups(ws) {
        let cron = spec::parse_cron(&expr).map_err(|message| Error::Schedule {
            message: format!("`{expr}`: {message}"),
            source: None,
        })?;
        for at in cron
            .iter_from(from, croner::Direction::Forward)
            .take_while(|t| *t < to)
        {
            due.entry(at).or_default().extend(jobs.iter().cloned());
        }
    }
    // Dependency order within an instant.
    let order: Vec<&str> = ws
        .graph
        .nodes
        .iter()
        .map(|n| n.spec.name.as_str())
        .collect();
    Ok(due
        .into_iter()
        .map(|(at, mut jobs)| {
            jobs.sort_by_key(|j| order.iter().position(|o| o == j));
            (at, jobs)
        })
        .collect())
}

/// Scheduled jobs that fire before a scheduled job they read, on the same UTC day, within the
/// week from `from`: they would read the upstream's previous result. One line per pair.
pub fn order_problems(ws: &Workspace, from: DateTime<Utc>) -> Result<Vec<String>> {
    let week = firings(ws, from, from + chrono::Duration::days(7))?;
    let mut problems = Vec::new();
    for node in &ws.graph.nodes {
        for up in ws.graph.upstream_of(&node.spec.name) {
            let Some(up_node) = ws.graph.node(up) else {
                continue;
            };
            if up_node.spec.schedule.is_none() || node.spec.schedule.is_none() {
                continue;
            }
            let times = |job: &str| -> Vec<DateTime<Utc>> {
                week.iter()
                    .filter(|(_, jobs)| jobs.iter().any(|j| j == job))
                    .map(|(at, _)| *at)
                    .collect()
            };
            let (mine, theirs) = (times(&node.spec.name), times(up));
            let early = mine.iter().find(|t| {
                theirs
                    .iter()
                    .any(|u| u.date_naive() == t.date_naive() && u > *t)
            });
            if let Some(t) = early {
                problems.push(format!(
                    "job `{}` is scheduled at {} but reads `{up}`, scheduled later that day: it would read the previous `{up}`",
                    node.spec.name,
                    t.format("%H:%M:%S UTC"),
                ));
            }
        }
    }
    Ok(problems)
}

/// Run the scheduler until `shutdown` resolves.
pub async fn serve(
    ws: Arc<Workspace>,
    concurrency: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let fail = |e: tokio_cron_scheduler::JobSchedulerError| Error::Schedule {
        message: e.to_string(),
        source: Some(Box::new(e)),
    };
    let mut scheduler = JobScheduler::new().await.map_err(fail)?;
    let groups = groups(&ws);
    if groups.is_empty() {
        return Err(Error::Schedule {
            message: "no job has a `schedule`: nothing to run".into(),
            source: None,
        });
    }
    for (expr, jobs) in groups {
        tracing::info!(schedule = %expr, jobs = %jobs.join(","), "scheduled");
        let running = Arc::new(AtomicBool::new(false));
        let ws = ws.clone();
        let job = Job::new_async(expr.as_str(), move |_id, _lock| {
            let ws = ws.clone();
            let jobs = jobs.clone();
            let running = running.clone();
            Box::pin(async move {
                if running.swap(true, Ordering::SeqCst) {
                    tracing::warn!(jobs = %jobs.join(","), "previous scheduled run still going: this firing is skipped");
                    return;
                }
                fire(&ws, &jobs, concurrency).await;
                running.store(false, Ordering::SeqCst);
            })
        })
        .map_err(fail)?;
        scheduler.add(job).await.map_err(fail)?;
    }
    scheduler.start().await.map_err(fail)?;
    shutdown.await;
    tracing::info!("scheduler stopping");
    scheduler.shutdown().await.map_err(fail)?;
    Ok(())
}

/// One firing: the due jobs as one run; failures are in the run ledger and the log.
async fn fire(ws: &Arc<Workspace>, jobs: &[String], concurrency: usize) {
    let plan = match ws.plan(jobs, Trigger::Schedule) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "scheduled run not planned");
            return;
        }
    };
    match execute::execute(ws.clone(), &plan, concurrency.max(1)).await {
        Ok(report) if report.failed() == 0 => {
            tracing::info!(run_id = %plan.run_id, jobs = %jobs.join(","), "scheduled run succeeded")
        }
        Ok(report) => tracing::error!(
            run_id = %plan.run_id,
            failed = report.failed(),
            "scheduled run had failures; see `retention runs`"
        ),
        Err(e) => tracing::error!(run_id = %plan.run_id, error = %e, "scheduled run failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::config::{Overrides, Project};
    use crate::store::Stores;

    /// A project with `a` at 06:00 and `b` (which reads `a`) at 05:00 and 07:00 daily.
    fn workspace(dir: &std::path::Path) -> Workspace {
        let write = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("jobs/a.toml", "schedule = \"0 0 6 * * *\"\n");
        write("sql/a.sql", "select 1 as x");
        write("jobs/b.toml", "schedule = \"0 0 5,7 * * *\"\n");
        write("sql/b.sql", "select x from a");
        let over = Overrides::with_storage(
            Some("memory:///raw/".into()),
            Some("memory:///curated/".into()),
        );
        let project = Project::load(dir, &over).unwrap();
        Workspace::load(crate::engine::session::Engine::new(project, Stores::default()).unwrap())
            .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn firings_list_each_instant_with_its_jobs_in_dependency_order() {
        let dir = tempfile::tempdir().unwrap();
        let ws = workspace(dir.path());
        let f = firings(
            &ws,
            utc("2026-12-01T00:00:00Z"),
            utc("2026-12-02T00:00:00Z"),
        )
        .unwrap();
        let shown: Vec<(String, Vec<String>)> = f
            .into_iter()
            .map(|(at, jobs)| (at.format("%H:%M").to_string(), jobs))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("05:00".to_string(), vec!["b".to_string()]),
                ("06:00".to_string(), vec!["a".to_string()]),
                ("07:00".to_string(), vec!["b".to_string()]),
            ]
        );
    }

    #[test]
    fn a_job_scheduled_before_its_upstream_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let ws = workspace(dir.path());
        let problems = order_problems(&ws, utc("2026-12-01T00:00:00Z")).unwrap();
        assert_eq!(
            problems,
            vec![
                "job `b` is scheduled at 05:00:00 UTC but reads `a`, scheduled later that day: it would read the previous `a`"
                    .to_string()
            ]
        );
    }
}
