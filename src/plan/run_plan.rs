//! The run plan: the selected jobs in dependency order with their inputs, what `plan` and
//! `run --dry-run` print before anything is read or written.

use url::Url;

use crate::error::Result;
use crate::plan::graph::Input;
use crate::plan::workspace::Workspace;
use crate::project::incremental::Range;
use crate::project::spec::WriteMode;
use crate::store::lease::Lease;
use crate::values::{AsOf, Selector, Trigger};

/// What a run will do: jobs in dependency order with their inputs.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub run_id: String,
    pub trigger: Trigger,
    /// `--as-of`: the day every job of the run is as of (else each job's own `as_of`).
    pub as_of: Option<AsOf>,
    pub jobs: Vec<PlannedJob>,
    /// Set for a daemon's run of one job's slot.
    pub claim: Option<SlotClaim>,
    /// `--forward-only`: incremental jobs whose SQL or spec changed go on from the intervals done
    /// instead of rebuilding.
    pub forward_only: bool,
    /// A backfill's interval: incremental jobs compute exactly these days.
    pub interval: Option<Range>,
    /// Recorded in `_runs.reason` (a backfill's id).
    pub reason: Option<String>,
}

/// A daemon's claim on the one job of a slot run: its lease, checked again just before the
/// publish, and the output table's version when the lease was taken, the only version the run
/// may publish onto (a commit by anyone since fails the publish).
#[derive(Debug, Clone)]
pub struct SlotClaim {
    pub lease: Lease,
    /// `None` when the table did not exist yet.
    pub base_version: Option<i64>,
}

/// One job in a run plan.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub name: String,
    pub table: String,
    pub url: Url,
    pub mode: WriteMode,
    pub inputs: Vec<Input>,
    /// Upstream jobs that run earlier in this same run.
    pub upstream_in_run: Vec<String>,
}

impl Workspace {
    /// The run plan for `selected` jobs (names in dependency order), each job as of its own day.
    pub fn plan(&self, selected: &[String], trigger: Trigger) -> Result<RunPlan> {
        self.plan_as_of(selected, trigger, None)
    }

    /// The run plan with `as_of` (`--as-of`) for every job, when given.
    pub fn plan_as_of(
        &self,
        selected: &[String],
        trigger: Trigger,
        as_of: Option<AsOf>,
    ) -> Result<RunPlan> {
        let mut jobs = Vec::new();
        for name in selected {
            let node = self.graph.node(name).expect("selected from graph");
            jobs.push(PlannedJob {
                name: name.clone(),
                table: node.spec.table.clone(),
                url: self.table_url(&node.spec.table)?,
                mode: node.spec.mode,
                inputs: node.inputs.clone(),
                upstream_in_run: self.upstream_in_run(name, selected, as_of),
            });
        }
        Ok(RunPlan {
            run_id: self.new_run_id(),
            trigger,
            as_of,
            jobs,
            claim: None,
            forward_only: false,
            interval: None,
            reason: None,
        })
    }

    /// The selected jobs `name` waits for: those it reads, and for a job whose `$as_of` (or an
    /// incremental job's end) is `latest`, the job that publishes the `[as_of]` table, so `latest`
    /// is read after it ran.
    fn upstream_in_run(&self, name: &str, selected: &[String], as_of: Option<AsOf>) -> Vec<String> {
        let node = self.graph.node(name).expect("selected from graph");
        let mut ups: Vec<String> = node
            .inputs
            .iter()
            .filter_map(|i| match i {
                Input::Job { job, .. } if selected.contains(job) => Some(job.clone()),
                _ => None,
            })
            .collect();
        let latest_table = &self.engine.project.latest_day.table;
        // An incremental job's intervals end at its as-of day, so it resolves one too.
        let resolves_day = node.spec.uses_as_of || node.spec.incremental.is_some();
        if resolves_day
            && as_of.unwrap_or(node.spec.as_of) == AsOf::Latest
            && let Some(publisher) = self.graph.nodes.iter().find(|n| n.spec.table == *latest_table)
            && publisher.spec.name != name
            && selected.contains(&publisher.spec.name)
            // Never wait for a job that reads this one (it would wait forever).
            && !self
                .graph
                .select(&[Selector::with_downstream(name)], false)
                .is_ok_and(|down| down.contains(&publisher.spec.name))
            && !ups.contains(&publisher.spec.name)
        {
            ups.push(publisher.spec.name.clone());
        }
        ups
    }

    /// A fresh run id: a UUIDv7 from the engine's clock, so ids sort by start time.
    pub fn new_run_id(&self) -> String {
        let now = self.engine.clock.now();
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            now.timestamp() as u64,
            now.timestamp_subsec_nanos(),
        );
        uuid::Uuid::new_v7(ts).to_string()
    }
}

impl RunPlan {
    /// Human-readable plan, as `retention plan` and `run --dry-run` print it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, j) in self.jobs.iter().enumerate() {
            let inputs: Vec<String> = j
                .inputs
                .iter()
                .map(|i| match i {
                    Input::Source(t) => format!("source:{t}"),
                    Input::Job { table, .. } => table.clone(),
                    Input::System(t) => t.clone(),
                })
                .collect();
            out.push_str(&format!(
                "{:>3}. {} -> {} ({}) <- [{}]\n",
                i + 1,
                j.name,
                j.url,
                j.mode,
                inputs.join(", ")
            ));
        }
        out
    }
}
