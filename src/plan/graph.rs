//! The job graph: dependencies inferred from the tables each job's SQL reads, selectors
//! (`job`, `+job`, `job+`, `tag:NAME`), cycle detection and dependency order (petgraph).

use std::collections::BTreeSet;

use datafusion::sql::parser::DFParserBuilder;
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use petgraph::Direction;
use petgraph::graphmap::DiGraphMap;
use petgraph::visit::{Dfs, Reversed};

use crate::engine::job::parser_position;
use crate::error::{Error, Result};
use crate::project::sources::Source;
use crate::project::spec::{JobSpec, OnClose};
use crate::store::system::{CLOSE_LOG, CLOSED_MONTHS, SYSTEM_TABLES, snapshot_table};
use crate::values::Selector;

/// What a job reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Input {
    /// A raw source table.
    Source(String),
    /// Another job's curated output: (job name, table name).
    Job { job: String, table: String },
    /// A table the engine keeps itself (`_runs`).
    System(String),
}

impl Input {
    /// The table name as written in SQL.
    pub fn table(&self) -> &str {
        match self {
            Input::Source(t) | Input::System(t) => t,
            Input::Job { table, .. } => table,
        }
    }
}

/// A job with its inferred inputs.
#[derive(Debug, Clone)]
pub struct Node {
    pub spec: JobSpec,
    pub inputs: Vec<Input>,
}

/// All jobs, in dependency order (every job after the jobs it reads).
#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
}

/// The tables a job reads: its SQL's and its checks' (CTE names and its own output excluded).
pub fn referenced_tables(spec: &JobSpec) -> Result<Vec<String>> {
    let mut names = tables_in_sql(&spec.name, &spec.sql_path, &spec.sql)?;
    for check in &spec.checks {
        let context = format!("{} (check `{}`)", spec.name, check.name);
        names.extend(
            tables_in_sql(&context, &spec.spec_path, &check.sql)?
                .into_iter()
                .filter(|t| *t != spec.table),
        );
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Parse one SELECT statement and list the tables it reads (CTE names excluded).
fn tables_in_sql(job: &str, path: &std::path::Path, sql: &str) -> Result<Vec<String>> {
    let sql_err = |message: String, line: usize, column: usize| Error::Sql {
        job: job.to_string(),
        path: path.to_path_buf(),
        line,
        column,
        message,
        source: None,
    };
    let dialect = GenericDialect {};
    // `AS MATERIALIZED` is blanked first, as the engine does (the generic dialect lacks it).
    let (sql, _) =
        crate::engine::materialize::unmark(sql).map_err(|e| sql_err(e.to_string(), 0, 0))?;
    let sql = sql.as_str();
    let mut statements = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| {
            let m = e.to_string();
            // The parser gives no position when the text ends too early: point at its end.
            let (l, c) = parser_position(&m)
                .unwrap_or_else(|| crate::error::line_col(sql.trim_end(), sql.trim_end().len()));
            sql_err(m, l, c)
        })?;
    if statements.len() != 1 {
        return Err(sql_err(
            format!(
                "expected exactly one SELECT statement, found {}",
                statements.len()
            ),
            1,
            1,
        ));
    }
    let statement = statements.pop_front().expect("one statement");
    let (tables, _ctes) =
        resolve_table_references(&statement, true).map_err(|e| sql_err(e.to_string(), 0, 0))?;
    let mut names: Vec<String> = tables.iter().map(|t| t.table().to_string()).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

impl Graph {
    /// Build the graph: resolve every job's inputs and order jobs; all problems reported at once.
    pub fn build(specs: Vec<JobSpec>, sources: &[Source]) -> Result<Graph> {
        let mut problems = Vec::new();
        for s in &specs {
            if sources.iter().any(|src| src.name == s.table) {
                problems.push(Error::Config {
                    path: s.spec_path.clone(),
                    key: "output.table".into(),
                    message: format!(
                        "job `{}` publishes `{}`, which is also a source name",
                        s.name, s.table
                    ),
                });
            }
        }
        let mut nodes = Vec::new();
        for spec in &specs {
            match resolve_inputs(spec, &specs, sources) {
                Ok(inputs) => nodes.push(Node {
                    spec: spec.clone(),
                    inputs,
                }),
                Err(mut e) => problems.append(&mut e),
            }
        }
        Error::from_many(problems)?;
        let nodes = topo_order(nodes)?;
        Ok(Graph { nodes })
    }

    /// Names of the jobs `job` reads from directly.
    pub fn upstream_of(&self, job: &str) -> Vec<&str> {
        self.node(job)
            .map(|n| n.upstream_jobs().collect())
            .unwrap_or_default()
    }

    /// Jobs that read `job` directly.
    pub fn downstream_of(&self, job: &str) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.upstream_jobs().any(|j| j == job))
            .map(|n| n.spec.name.as_str())
            .collect()
    }

    pub fn node(&self, job: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.spec.name == job)
    }

    /// Job names in dependency order.
    pub fn job_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.spec.name.clone()).collect()
    }

    /// The dependency graph: an edge from each job to every job that reads it.
    fn digraph(&self) -> DiGraphMap<&str, ()> {
        let mut g = DiGraphMap::new();
        for n in &self.nodes {
            g.add_node(n.spec.name.as_str());
            for up in n.upstream_jobs() {
                g.add_edge(up, n.spec.name.as_str(), ());
            }
        }
        g
    }

    /// Resolve selectors to job names, returned in dependency order. Empty with `all` = every job.
    pub fn select(&self, selectors: &[Selector], all: bool) -> Result<Vec<String>> {
        let graph = self.digraph();
        let mut chosen: BTreeSet<&str> = BTreeSet::new();
        if all || selectors.is_empty() {
            chosen.extend(self.nodes.iter().map(|n| n.spec.name.as_str()));
        }
        let mut problems = Vec::new();
        for sel in selectors {
            let matched = match sel {
                // Resolved to job selectors by `Workspace::select` before reaching the graph.
                Selector::Modified { .. } => false,
                Selector::Tag(tag) => {
                    let tagged: Vec<&str> = self
                        .nodes
                        .iter()
                        .filter(|n| n.spec.tags.iter().any(|t| t == tag))
                        .map(|n| n.spec.name.as_str())
                        .collect();
                    chosen.extend(&tagged);
                    !tagged.is_empty()
                }
                Selector::Job {
                    name,
                    upstream,
                    downstream,
                } => match self.node(name) {
                    None => false,
                    Some(n) => {
                        let name = n.spec.name.as_str();
                        chosen.insert(name);
                        if *upstream {
                            let mut dfs = Dfs::new(Reversed(&graph), name);
                            while let Some(j) = dfs.next(Reversed(&graph)) {
                                chosen.insert(j);
                            }
                        }
                        if *downstream {
                            let mut dfs = Dfs::new(&graph, name);
                            while let Some(j) = dfs.next(&graph) {
                                chosen.insert(j);
                            }
                        }
                        true
                    }
                },
            };
            if !matched {
                problems.push(Error::Selector {
                    selector: sel.to_string(),
                });
            }
        }
        Error::from_many(problems)?;
        Ok(self
            .nodes
            .iter()
            .map(|n| n.spec.name.clone())
            .filter(|n| chosen.contains(n.as_str()))
            .collect())
    }

    /// Graphviz DOT of the selected jobs and their inputs. Nodes are named by job (`petgraph`'s
    /// own `Dot` names them by index, which no script can match).
    pub fn to_dot(&self, selected: &[String]) -> String {
        let mut out = String::from("digraph retention {\n  rankdir=LR;\n  node [shape=box];\n");
        let mut sources = BTreeSet::new();
        for n in self
            .nodes
            .iter()
            .filter(|n| selected.contains(&n.spec.name))
        {
            out.push_str(&format!("  \"{}\";\n", n.spec.name));
            for i in &n.inputs {
                match i {
                    Input::Job { job, .. } => {
                        out.push_str(&format!("  \"{job}\" -> \"{}\";\n", n.spec.name))
                    }
                    Input::Source(t) | Input::System(t) => {
                        sources.insert(t.clone());
                        out.push_str(&format!("  \"source:{t}\" -> \"{}\";\n", n.spec.name));
                    }
                }
            }
        }
        for s in sources {
            out.push_str(&format!(
                "  \"source:{s}\" [shape=cylinder, label=\"{s}\"];\n"
            ));
        }
        out.push_str("}\n");
        out
    }
}

impl Node {
    /// The jobs this job reads.
    fn upstream_jobs(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().filter_map(|i| match i {
            Input::Job { job, .. } => Some(job.as_str()),
            _ => None,
        })
    }
}

fn is_frozen(spec: &JobSpec) -> bool {
    spec.close
        .as_ref()
        .is_some_and(|c| c.on_close == OnClose::Freeze)
}

/// What `spec` reads: each table its SQL names, as a job output, a source or a system table, plus
/// what the engine reads for it (a frozen table is overlaid with its snapshots on every run).
fn resolve_inputs(
    spec: &JobSpec,
    specs: &[JobSpec],
    sources: &[Source],
) -> std::result::Result<Vec<Input>, Vec<Error>> {
    let tables = referenced_tables(spec).map_err(|e| vec![e])?;
    let mut inputs = Vec::new();
    let mut problems = Vec::new();
    for t in tables {
        if let Some(job) = specs.iter().find(|s| s.table == t) {
            inputs.push(Input::Job {
                job: job.name.clone(),
                table: t,
            });
        } else if sources.iter().any(|s| s.name == t) {
            inputs.push(Input::Source(t));
        } else if SYSTEM_TABLES.contains(&t.as_str())
            || specs
                .iter()
                .any(|s| is_frozen(s) && snapshot_table(&s.table) == t)
        {
            inputs.push(Input::System(t));
        } else {
            problems.push(Error::UnknownTable {
                job: spec.name.clone(),
                path: spec.sql_path.clone(),
                table: t,
            });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut implied = Vec::new();
    // `_closed_months` is a view over the close log.
    if inputs.contains(&Input::System(CLOSED_MONTHS.to_string())) {
        implied.push(CLOSE_LOG.to_string());
    }
    if is_frozen(spec) {
        implied.extend([CLOSE_LOG.to_string(), snapshot_table(&spec.table)]);
    }
    for t in implied {
        let input = Input::System(t);
        if !inputs.contains(&input) {
            inputs.push(input);
        }
    }
    Ok(inputs)
}

/// Order nodes so every job comes after its upstream jobs, the first ready job by name first
/// (Kahn's algorithm over the petgraph graph); report a cycle.
fn topo_order(nodes: Vec<Node>) -> Result<Vec<Node>> {
    let unordered = Graph { nodes };
    let graph = unordered.digraph();
    let mut waiting: std::collections::BTreeMap<&str, usize> = graph
        .nodes()
        .map(|n| (n, graph.neighbors_directed(n, Direction::Incoming).count()))
        .collect();
    let mut ready: BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut order: Vec<String> = Vec::new();
    while let Some(next) = ready.pop_first() {
        waiting.remove(next);
        order.push(next.to_string());
        for down in graph.neighbors_directed(next, Direction::Outgoing) {
            let d = waiting.get_mut(down).expect("waiting job");
            *d -= 1;
            if *d == 0 {
                ready.insert(down);
            }
        }
    }
    if !waiting.is_empty() {
        return Err(Error::Cycle {
            cycle: find_cycle(&graph, waiting.keys().copied().collect()),
        });
    }
    let mut nodes = unordered.nodes;
    nodes.sort_by_key(|n| order.iter().position(|o| *o == n.spec.name));
    Ok(nodes)
}

/// A cycle among the jobs that could not be ordered: from the first by name, follow the first
/// blocked job it reads until a job repeats.
fn find_cycle(graph: &DiGraphMap<&str, ()>, blocked: BTreeSet<&str>) -> Vec<String> {
    let mut path: Vec<&str> = vec![*blocked.first().expect("a blocked job")];
    loop {
        let last = *path.last().expect("non-empty");
        let next = graph
            .neighbors_directed(last, Direction::Incoming)
            .filter(|d| blocked.contains(d))
            .min()
            .expect("a blocked job waits on another blocked job");
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(next.to_string());
            return cycle;
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Selector {
        s.parse().unwrap()
    }

    fn spec(name: &str, sql: &str, tags: &[&str]) -> JobSpec {
        JobSpec {
            sql: sql.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..JobSpec::test_spec(name)
        }
    }

    fn sources() -> Vec<Source> {
        crate::project::sources::parse(
            std::path::Path::new("s.toml"),
            "[[source]]\nname = \"orders\"\ncolumns = []\n[[source]]\nname = \"refunds\"\ncolumns = []\n",
            &url::Url::parse("memory:///raw/").unwrap(),
        )
        .unwrap()
    }

    fn graph() -> Graph {
        Graph::build(
            vec![
                spec("summary", "with x as (select * from enriched) select * from x join refunds using (order_id)", &["mart"]),
                spec("enriched", "select * from orders", &["base"]),
                spec("report", "select * from summary", &["mart"]),
                spec("other", "select 1", &[]),
            ],
            &sources(),
        )
        .unwrap()
    }

    #[test]
    fn infers_dependencies_and_orders() {
        let g = graph();
        let order: Vec<&str> = g.nodes.iter().map(|n| n.spec.name.as_str()).collect();
        assert_eq!(order, vec!["enriched", "other", "summary", "report"]);
        assert_eq!(
            g.node("summary").unwrap().inputs,
            vec![
                Input::Job {
                    job: "enriched".into(),
                    table: "enriched".into()
                },
                Input::Source("refunds".into())
            ]
        );
    }

    #[test]
    fn selectors() {
        let g = graph();
        assert_eq!(
            g.select(&[sel("+summary")], false).unwrap(),
            vec!["enriched", "summary"]
        );
        assert_eq!(
            g.select(&[sel("enriched+")], false).unwrap(),
            vec!["enriched", "summary", "report"]
        );
        assert_eq!(
            g.select(&[sel("tag:mart")], false).unwrap(),
            vec!["summary", "report"]
        );
        assert_eq!(g.select(&[], true).unwrap().len(), 4);
        let e = g
            .select(&[sel("nope"), sel("tag:none")], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nope`") && e.contains("`tag:none`"), "{e}");
    }

    #[test]
    fn unknown_table_and_syntax_error() {
        let e = Graph::build(
            vec![
                spec("a", "select * from nowhere", &[]),
                spec("b", "select * from\norders where", &[]),
            ],
            &sources(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sql/a.sql: job `a` reads unknown table `nowhere`"),
            "{e}"
        );
        assert!(e.contains("sql/b.sql:2:13: job `b`"), "{e}");
    }

    #[test]
    fn cycle_is_named() {
        let e = Graph::build(
            vec![
                spec("a", "select * from c", &[]),
                spec("b", "select * from a", &[]),
                spec("c", "select * from b", &[]),
            ],
            &sources(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "cyclic dependency between jobs: a -> c -> b -> a");
    }

    #[test]
    fn dot_lists_edges() {
        let g = graph();
        let dot = g.to_dot(&g.select(&[], true).unwrap());
        assert!(dot.contains("\"enriched\" -> \"summary\";"));
        assert!(dot.contains("\"source:orders\" -> \"enriched\";"));
    }
}
