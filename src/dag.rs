//! The job graph: dependencies inferred from the tables each job's SQL reads, selectors
//! (`job`, `+job`, `job+`, `tag:NAME`), cycle detection and dependency order.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::sql::parser::DFParserBuilder;
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::error::{Error, Result};
use crate::sources::Source;
use crate::spec::{JobSpec, OnClose};

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

/// System tables a job may read: the run ledger, the month-close log and the frozen record ids
/// (`_closed_<table>` snapshots of frozen tables are system tables too).
pub const SYSTEM_TABLES: [&str; 4] = [
    crate::ledger::RUNS_TABLE,
    crate::close::CLOSE_LOG,
    crate::close::CLOSED_RECORDS,
    crate::close::CLOSED_MONTHS,
];

/// Extract `line` and `column` from a sqlparser message (`... at Line: 3, Column: 7`).
pub fn parser_position(message: &str) -> Option<(usize, usize)> {
    let i = message.rfind("Line: ")?;
    let rest = &message[i + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
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
    };
    let dialect = GenericDialect {};
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
        let by_table: BTreeMap<&str, &str> = specs
            .iter()
            .map(|s| (s.table.as_str(), s.name.as_str()))
            .collect();
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
            let tables = match referenced_tables(spec) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let mut inputs = Vec::new();
            for t in tables {
                if let Some(job) = by_table.get(t.as_str()) {
                    inputs.push(Input::Job {
                        job: job.to_string(),
                        table: t,
                    });
                } else if sources.iter().any(|s| s.name == t) {
                    inputs.push(Input::Source(t));
                } else if SYSTEM_TABLES.contains(&t.as_str())
                    || specs.iter().any(|s| {
                        s.close
                            .as_ref()
                            .is_some_and(|c| c.on_close == OnClose::Freeze)
                            && crate::close::snapshot_table(&s.table) == t
                    })
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
            // `_closed_months` is a view over the close log.
            if inputs.contains(&Input::System(crate::close::CLOSED_MONTHS.to_string())) {
                let log = Input::System(crate::close::CLOSE_LOG.to_string());
                if !inputs.contains(&log) {
                    inputs.push(log);
                }
            }
            // A frozen table is overlaid with its closed months' snapshots on every run.
            if spec
                .close
                .as_ref()
                .is_some_and(|c| c.on_close == OnClose::Freeze)
            {
                for t in [
                    crate::close::CLOSE_LOG.to_string(),
                    crate::close::snapshot_table(&spec.table),
                ] {
                    let input = Input::System(t);
                    if !inputs.contains(&input) {
                        inputs.push(input);
                    }
                }
            }
            nodes.push(Node {
                spec: spec.clone(),
                inputs,
            });
        }
        Error::from_many(problems)?;
        let nodes = topo_order(nodes)?;
        Ok(Graph { nodes })
    }

    /// Names of the jobs `job` reads from directly.
    pub fn upstream_of(&self, job: &str) -> Vec<&str> {
        self.node(job)
            .map(|n| {
                n.inputs
                    .iter()
                    .filter_map(|i| match i {
                        Input::Job { job, .. } => Some(job.as_str()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Jobs that read `job` directly.
    pub fn downstream_of(&self, job: &str) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| {
                n.inputs
                    .iter()
                    .any(|i| matches!(i, Input::Job { job: j, .. } if j == job))
            })
            .map(|n| n.spec.name.as_str())
            .collect()
    }

    pub fn node(&self, job: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.spec.name == job)
    }

    fn closure<'a>(
        &'a self,
        start: &'a str,
        step: impl Fn(&'a str) -> Vec<&'a str>,
    ) -> BTreeSet<&'a str> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(j) = stack.pop() {
            if seen.insert(j) {
                stack.extend(step(j));
            }
        }
        seen
    }

    /// Resolve selectors to job names, returned in dependency order. Empty with `all` = every job.
    pub fn select(&self, selectors: &[String], all: bool) -> Result<Vec<String>> {
        let mut chosen: BTreeSet<&str> = BTreeSet::new();
        if all || selectors.is_empty() {
            chosen.extend(self.nodes.iter().map(|n| n.spec.name.as_str()));
        }
        let mut problems = Vec::new();
        for sel in selectors {
            let matched: bool = if let Some(tag) = sel.strip_prefix("tag:") {
                let tagged: Vec<&str> = self
                    .nodes
                    .iter()
                    .filter(|n| n.spec.tags.iter().any(|t| t == tag))
                    .map(|n| n.spec.name.as_str())
                    .collect();
                chosen.extend(&tagged);
                !tagged.is_empty()
            } else {
                let up = sel.starts_with('+');
                let down = sel.ends_with('+') && sel.len() > 1;
                let name = sel.trim_start_matches('+').trim_end_matches('+');
                match self.node(name) {
                    None => false,
                    Some(n) => {
                        let name = n.spec.name.as_str();
                        chosen.insert(name);
                        if up {
                            chosen.extend(self.closure(name, |j| self.upstream_of(j)));
                        }
                        if down {
                            chosen.extend(self.closure(name, |j| self.downstream_of(j)));
                        }
                        true
                    }
                }
            };
            if !matched {
                problems.push(Error::Selector {
                    selector: sel.clone(),
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

    /// Graphviz DOT of the selected jobs and their inputs.
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

/// Order nodes so every job comes after its upstream jobs (stable by name); report a cycle.
fn topo_order(nodes: Vec<Node>) -> Result<Vec<Node>> {
    let names: BTreeSet<String> = nodes.iter().map(|n| n.spec.name.clone()).collect();
    let deps = |n: &Node| -> BTreeSet<String> {
        n.inputs
            .iter()
            .filter_map(|i| match i {
                Input::Job { job, .. } => Some(job.clone()),
                _ => None,
            })
            .filter(|j| names.contains(j))
            .collect()
    };
    let mut remaining: Vec<Node> = nodes;
    remaining.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut ordered = Vec::new();
    while !remaining.is_empty() {
        let ready = remaining
            .iter()
            .position(|n| deps(n).iter().all(|d| done.contains(d)));
        match ready {
            Some(i) => {
                let n = remaining.remove(i);
                done.insert(n.spec.name.clone());
                ordered.push(n);
            }
            None => {
                return Err(Error::Cycle {
                    cycle: find_cycle(&remaining, &deps),
                });
            }
        }
    }
    Ok(ordered)
}

/// Walk from a blocked job along unfinished dependencies until a job repeats.
fn find_cycle(remaining: &[Node], deps: &dyn Fn(&Node) -> BTreeSet<String>) -> Vec<String> {
    let blocked: BTreeMap<&str, BTreeSet<String>> = remaining
        .iter()
        .map(|n| (n.spec.name.as_str(), deps(n)))
        .collect();
    let mut path: Vec<String> = vec![remaining[0].spec.name.clone()];
    loop {
        let last = path.last().expect("non-empty").clone();
        let next = blocked[last.as_str()]
            .iter()
            .find(|d| blocked.contains_key(d.as_str()))
            .expect("a blocked job waits on another blocked job")
            .clone();
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::WriteMode;
    use std::path::PathBuf;

    fn spec(name: &str, sql: &str, tags: &[&str]) -> JobSpec {
        JobSpec {
            name: name.into(),
            description: String::new(),
            spec_path: PathBuf::from(format!("jobs/{name}.toml")),
            sql_path: PathBuf::from(format!("sql/{name}.sql")),
            sql: sql.into(),
            schedule: None,
            owner: String::new(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            table: name.into(),
            partition_by: vec![],
            mode: WriteMode::Overwrite,
            params: vec![],
            checks: vec![],
            close: None,
        }
    }

    fn sources() -> Vec<Source> {
        crate::sources::parse(
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
            g.select(&["+summary".into()], false).unwrap(),
            vec!["enriched", "summary"]
        );
        assert_eq!(
            g.select(&["enriched+".into()], false).unwrap(),
            vec!["enriched", "summary", "report"]
        );
        assert_eq!(
            g.select(&["tag:mart".into()], false).unwrap(),
            vec!["summary", "report"]
        );
        assert_eq!(g.select(&[], true).unwrap().len(), 4);
        let e = g
            .select(&["nope".into(), "tag:none".into()], false)
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
