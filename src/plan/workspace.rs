//! The workspace: the project's files loaded and validated (sources, job specs, the job graph) on
//! an engine, with parameter overrides for a run and the sessions ad-hoc queries use.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use datafusion::prelude::SessionContext;
use url::Url;

use crate::engine::contract;
use crate::engine::freshness::{self, Finding, Level};
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::ledger;
use crate::plan::graph::Graph;
use crate::project::params::parse_param;
use crate::project::sources::{self, Source};
use crate::project::spec;
use crate::store::delta;
use crate::store::system::{CLOSE_LOG, CLOSED_RECORDS, RUNS_TABLE, snapshot_table};
use crate::values::{ParamAssignment, Selector};

/// Everything loaded from the project's files, validated.
pub struct Workspace {
    pub engine: Engine,
    pub sources: Vec<Source>,
    pub graph: Graph,
}

/// Each source's provider, or why its files break the contract (jobs reading it then fail).
pub type SourceProviders = HashMap<String, std::result::Result<Arc<dyn TableProvider>, Arc<Error>>>;

impl Workspace {
    /// This workspace for one run: its engine lists each source once for the whole run
    /// (`Engine::for_run`).
    pub fn for_run(&self) -> Result<Workspace> {
        Ok(Workspace {
            engine: self.engine.for_run()?,
            sources: self.sources.clone(),
            graph: self.graph.clone(),
        })
    }

    /// Load sources and job specs and build the job graph; all problems reported together.
    pub fn load(engine: Engine) -> Result<Workspace> {
        let jobs_dir = engine.project.jobs_dir();
        let sources = sources::load(&jobs_dir, &engine.project.raw);
        let specs = spec::load_all(&engine.project.root, &jobs_dir);
        let (sources, specs) = match (sources, specs) {
            (Ok(s), Ok(j)) => (s, j),
            (a, b) => {
                let errs = [a.err(), b.err()]
                    .into_iter()
                    .flatten()
                    .flat_map(Error::flatten)
                    .collect();
                return Err(Error::Many(errs));
            }
        };
        // Project-wide parameters reach every job that does not set its own.
        let specs = specs
            .into_iter()
            .map(|mut s| {
                for (k, v) in &engine.project.params {
                    if !s.params.iter().any(|(n, _)| n == k) {
                        s.params.push((k.clone(), v.clone()));
                    }
                }
                s
            })
            .collect();
        let graph = Graph::build(specs, &sources)?;
        Ok(Workspace {
            engine,
            sources,
            graph,
        })
    }

    /// Override job parameters from the command line (`--param name=value`) for the selected
    /// jobs. The value is parsed as the type the spec gives the parameter.
    pub fn override_params(
        &mut self,
        selected: &[String],
        params: &[ParamAssignment],
    ) -> Result<()> {
        let mut problems = Vec::new();
        for p in params {
            if p.name == crate::project::spec::AS_OF_PARAM {
                problems.push(Error::Argument {
                    flag: "--param",
                    key: p.name.clone(),
                    message: "the as-of day is not a parameter: use --as-of DAY (or latest, today)"
                        .into(),
                });
                continue;
            }
            let mut used = false;
            for node in self
                .graph
                .nodes
                .iter_mut()
                .filter(|n| selected.contains(&n.spec.name))
            {
                for (k, v) in node.spec.params.iter_mut().filter(|(k, _)| *k == p.name) {
                    match parse_param(v, &p.value) {
                        Ok(parsed) => *v = parsed,
                        Err(e) => problems.push(Error::Argument {
                            flag: "--param",
                            key: k.clone(),
                            message: format!("{e} (job `{}`)", node.spec.name),
                        }),
                    }
                    used = true;
                }
            }
            if !used {
                problems.push(Error::Argument {
                    flag: "--param",
                    key: p.name.clone(),
                    message: "no selected job declares this parameter in its [params]".into(),
                });
            }
        }
        Error::from_many(problems)
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Location of a curated table.
    pub fn table_url(&self, table: &str) -> Result<Url> {
        delta::table_url(&self.engine.project.curated, table)
    }

    /// Providers for the named sources, each checked against its contract. Problems with a source
    /// are returned per source, not raised.
    pub async fn source_providers(
        &self,
        names: impl IntoIterator<Item = String>,
    ) -> SourceProviders {
        let ctx = self.engine.session(&[]).expect("config validated at load");
        let state = ctx.state();
        let mut out = HashMap::new();
        for name in names {
            let Some(source) = self.source(&name) else {
                continue;
            };
            let r = contract::register(source, &state).await.map_err(Arc::new);
            if let Err(e) = &r {
                tracing::error!(source = %name, error = %e, "source failed its contract");
            }
            out.insert(name, r);
        }
        out
    }

    /// The jobs `selectors` pick (every job with `all` or no selector), with `state:modified`
    /// resolved from the run ledger: the jobs whose spec hash differs from their last successful
    /// run's, or that never succeeded. A selection of only unmodified jobs is empty.
    pub async fn select(&self, selectors: &[Selector], all: bool) -> Result<Vec<String>> {
        if !selectors
            .iter()
            .any(|s| matches!(s, Selector::Modified { .. }))
        {
            return self.graph.select(selectors, all);
        }
        let last = ledger::last_spec_hashes(&self.engine, &self.engine.project.curated).await?;
        let modified: Vec<&str> = self
            .graph
            .nodes
            .iter()
            .filter(|n| last.get(&n.spec.name).cloned().flatten() != Some(n.spec.spec_hash.clone()))
            .map(|n| n.spec.name.as_str())
            .collect();
        let mut resolved = Vec::new();
        for s in selectors {
            match s {
                Selector::Modified { downstream } => resolved.extend(modified.iter().map(|m| {
                    if *downstream {
                        Selector::with_downstream(m)
                    } else {
                        Selector::job(m)
                    }
                })),
                other => resolved.push(other.clone()),
            }
        }
        if resolved.is_empty() && !all {
            return Ok(vec![]);
        }
        self.graph.select(&resolved, all)
    }

    /// The freshness of every source in `providers` that has a rule and passed its contract, at
    /// the clock's now; warnings and errors are logged.
    pub async fn freshness(&self, providers: &SourceProviders) -> Vec<Finding> {
        let now = self.engine.clock.now();
        let mut out = Vec::new();
        for (name, provider) in providers {
            let (Some(source), Ok(provider)) = (self.source(name), provider) else {
                continue;
            };
            let Some(rule) = &source.freshness else {
                continue;
            };
            match freshness::check(&self.engine, source, rule, provider.clone(), now).await {
                Ok(f) => {
                    match f.level {
                        Level::Fresh => {}
                        Level::Warn => tracing::warn!(source = %name, "{}", f.message()),
                        Level::Error => tracing::error!(source = %name, "{}", f.message()),
                    }
                    out.push(f);
                }
                Err(e) => tracing::error!(source = %name, error = %e, "freshness not checked"),
            }
        }
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }

    /// A session with every source (that passes its contract), every published curated table
    /// and the run ledger registered: for ad-hoc queries and `explain`.
    pub async fn query_session(&self) -> Result<SessionContext> {
        self.query_session_with(&BTreeMap::new()).await
    }

    /// As `query_session`, with schema-only stand-ins for job tables not published yet.
    pub async fn query_session_with(
        &self,
        unpublished: &BTreeMap<String, SchemaRef>,
    ) -> Result<SessionContext> {
        let mut tables: Vec<(String, Arc<dyn TableProvider>)> = Vec::new();
        let names: Vec<String> = self.sources.iter().map(|s| s.name.clone()).collect();
        for (name, provider) in self.source_providers(names).await {
            match provider {
                Ok(p) => tables.push((name, p)),
                Err(e) => tracing::warn!(source = %name, error = %e, "source not queryable"),
            }
        }
        for table in self.curated_tables() {
            if let Some(t) = delta::open(&self.engine.stores, &self.table_url(&table)?).await? {
                tables.push((table, delta::provider(&t).await?));
            } else if let Some(schema) = self
                .graph
                .nodes
                .iter()
                .find(|n| n.spec.table == table)
                .and_then(|n| unpublished.get(&n.spec.name))
            {
                tables.push((table, Arc::new(EmptyTable::new(schema.clone()))));
            }
        }
        let ctx = self.engine.session(&tables)?;
        self.engine.prepare(&ctx).await?;
        Ok(ctx)
    }

    /// Every table in the curated store: each job's, the run ledger, the close tables and the
    /// snapshot table of every job with `[close]`.
    pub fn curated_tables(&self) -> Vec<String> {
        let mut tables: Vec<String> = self
            .graph
            .nodes
            .iter()
            .map(|n| n.spec.table.clone())
            .collect();
        tables.extend([RUNS_TABLE, CLOSE_LOG, CLOSED_RECORDS].map(String::from));
        for n in &self.graph.nodes {
            if n.spec.close.is_some() {
                tables.push(snapshot_table(&n.spec.table));
            }
        }
        tables
    }
}
