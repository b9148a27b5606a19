//! Cron slots: the instants a scheduled job is due, read in the job's time zone. A slot is the
//! UTC instant of one cron occurrence; the daemon runs each (job, slot) once. Also the firings
//! `serve --dry-run` lists and the same-day order problems it warns about.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::plan::workspace::Workspace;
use crate::project::config::ReportSchedule;
use crate::project::spec::{self, JobSpec};

/// A job's cron in its time zone.
#[derive(Debug, Clone)]
pub struct JobCron {
    pub job: String,
    pub expr: String,
    pub timezone: chrono_tz::Tz,
    cron: croner::Cron,
}

impl JobCron {
    /// The cron `expr` in `timezone` for slot name `job`; a bad `expr` is reported as `what`'s.
    fn new(job: &str, expr: &str, timezone: chrono_tz::Tz, what: &str) -> Result<JobCron> {
        let cron = spec::parse_cron(expr).map_err(|message| Error::Schedule {
            message: format!("{what}: {message}"),
            source: None,
        })?;
        Ok(JobCron {
            job: job.to_string(),
            expr: expr.to_string(),
            timezone,
            cron,
        })
    }

    /// The cron of `spec`, `None` for a job without a schedule.
    pub fn of(spec: &JobSpec) -> Result<Option<JobCron>> {
        let Some(expr) = &spec.schedule else {
            return Ok(None);
        };
        let what = format!("job `{}`", spec.name);
        JobCron::new(&spec.name, expr, spec.policy.timezone, &what).map(Some)
    }

    /// The cron of the scheduled report (`[report]`), under the slot name `report_slot`.
    pub fn of_report(report_slot: &str, schedule: &ReportSchedule) -> Result<JobCron> {
        JobCron::new(
            report_slot,
            &schedule.expr,
            schedule.timezone,
            "[report] schedule",
        )
    }

    /// The slots in `[from, to)`, in order.
    pub fn slots(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        self.cron
            .iter_from(
                from.with_timezone(&self.timezone),
                croner::Direction::Forward,
            )
            .map(|t| t.to_utc())
            .take_while(|t| *t < to)
            .collect()
    }

    /// The newest slot at or before `now` (the one a firing at `now` runs).
    pub fn latest(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&now.with_timezone(&self.timezone), true)
            .ok()
            .map(|t| t.to_utc())
    }

    /// The first slot after `now`.
    pub fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&now.with_timezone(&self.timezone), false)
            .ok()
            .map(|t| t.to_utc())
    }
}

/// Every scheduled job's cron, in dependency order.
pub fn crons(ws: &Workspace) -> Result<Vec<JobCron>> {
    let mut out = Vec::new();
    for n in &ws.graph.nodes {
        if let Some(c) = JobCron::of(&n.spec)? {
            out.push(c);
        }
    }
    Ok(out)
}

/// The report's cron, when `[report]` has a schedule; its slots are named `REPORT_SLOT`.
pub fn report_cron(ws: &Workspace) -> Result<Option<JobCron>> {
    ws.engine
        .project
        .report
        .as_ref()
        .map(|r| JobCron::of_report(REPORT_SLOT, r))
        .transpose()
}

/// The name the scheduled report's slots (leases, metrics, logs) go by.
pub const REPORT_SLOT: &str = "_report";

/// Every firing in `[from, to)`: the instant and the jobs due then (the report as `_report`), in
/// time order and dependency order within an instant.
pub fn firings(
    ws: &Workspace,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Vec<String>)>> {
    let mut due: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
    for c in crons(ws)?.into_iter().chain(report_cron(ws)?) {
        for at in c.slots(from, to) {
            due.entry(at).or_default().push(c.job.clone());
        }
    }
    Ok(due.into_iter().collect())
}

/// Scheduled jobs that fire before a scheduled job they read, on the same UTC day, within the
/// week from `from`: they would read the upstream's previous result unless it is triggered for
/// them. One line per pair.
pub fn order_problems(ws: &Workspace, from: DateTime<Utc>) -> Result<Vec<String>> {
    let to = from + chrono::Duration::days(7);
    let crons = crons(ws)?;
    let times = |job: &str| -> Vec<DateTime<Utc>> {
        crons
            .iter()
            .find(|c| c.job == job)
            .map(|c| c.slots(from, to))
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    for c in &crons {
        let mine = times(&c.job);
        for up in ws.graph.upstream_of(&c.job) {
            let theirs = times(up);
            let early = mine.iter().find(|t| {
                theirs
                    .iter()
                    .any(|u| u.date_naive() == t.date_naive() && u > *t)
            });
            if let Some(t) = early {
                problems.push(format!(
                    "job `{}` is scheduled at {} but reads `{up}`, scheduled later that day: it would read the previous `{up}`",
                    c.job,
                    t.format("%H:%M:%S UTC"),
                ));
            }
        }
    }
    Ok(problems)
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

    fn berlin_six() -> JobCron {
        let mut spec = crate::project::spec::JobSpec::test_spec("daily");
        spec.schedule = Some("0 0 6 * * *".into());
        spec.policy.timezone = chrono_tz::Europe::Berlin;
        JobCron::of(&spec).unwrap().unwrap()
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

    #[test]
    fn a_local_time_cron_follows_daylight_saving() {
        let c = berlin_six();
        // 06:00 in Berlin is 05:00 UTC in summer and 06:00 UTC in winter; the clocks went back
        // on 2026-10-25.
        assert_eq!(
            c.slots(utc("2026-10-24T00:00:00Z"), utc("2026-10-27T00:00:00Z")),
            vec![
                utc("2026-10-24T04:00:00Z"),
                utc("2026-10-25T05:00:00Z"),
                utc("2026-10-26T05:00:00Z"),
            ]
        );
        // The slot a firing runs is the newest at or before the moment; the next one follows.
        assert_eq!(
            c.latest(utc("2026-12-03T05:00:00Z")),
            Some(utc("2026-12-03T05:00:00Z"))
        );
        assert_eq!(
            c.latest(utc("2026-12-03T04:59:59Z")),
            Some(utc("2026-12-02T05:00:00Z"))
        );
        assert_eq!(
            c.next(utc("2026-12-03T05:00:00Z")),
            Some(utc("2026-12-04T05:00:00Z"))
        );
    }
}
