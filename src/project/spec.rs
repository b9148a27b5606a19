//! Job specs (`jobs/<job>.toml`): raw form with every field documented, validated into `JobSpec`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::common::ScalarValue;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::project::incremental::{Grain, Incremental, is_aligned};
use crate::project::params::param_value;
use crate::project::run_policy::{self, Catchup, RunPolicy};
use crate::project::sources::{SOURCES_FILE, is_identifier};
use crate::values::AsOf;

/// `jobs/<job>.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobSpec {
    /// Job name; defaults to the file's stem and must equal it when given.
    pub name: Option<String>,
    /// One sentence on what the output table holds (shown in `plan` and the docs).
    #[serde(default)]
    pub description: String,
    /// What each output column means, by column name (shown by BI tools as column comments,
    /// through the SQL servers). A name that is not an output column fails `validate`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// SQL file, relative to the project root. Default `sql/<name>.sql`.
    pub sql: Option<String>,
    /// Cron schedule, seconds first (`sec min hour day-of-month month day-of-week`), read in
    /// `timezone`.
    pub schedule: Option<String>,
    /// IANA time zone of `schedule` (default `UTC`), e.g. `Europe/Berlin`: a daily 06:00 stays at
    /// 06:00 local time across daylight saving changes.
    pub timezone: Option<String>,
    /// How long a run may take before the daemon abandons it without publishing (default `1h`;
    /// `90s`, `30m`, `2h`).
    pub timeout: Option<String>,
    /// How many times the daemon retries a transient failure (object store 5xx, timeouts, a lost
    /// commit race), with exponential backoff and jitter (default 3). SQL, contract and check
    /// failures are never retried.
    pub retries: Option<u32>,
    /// Slots missed while no daemon ran: `none`, `latest` (default: the newest one) or `all`.
    #[serde(default)]
    pub catchup: Catchup,
    /// After a successful scheduled run, start this job's downstream jobs for the same slot.
    #[serde(default)]
    pub trigger_downstream: bool,
    /// `full` (default): every run rebuilds the table. `incremental`: a run computes only the
    /// intervals of `time_column` not yet done plus `lookback` intervals, with `$start` and `$end`
    /// bound as DATEs, and replaces just those.
    #[serde(default)]
    pub kind: JobKind,
    /// For `incremental`: the output column holding each row's interval (a DATE, or a string
    /// `YYYY-MM-DD` by day, `YYYY-MM` by month).
    pub time_column: Option<String>,
    /// For `incremental`: `day` or `month`.
    pub grain: Option<Grain>,
    /// For `incremental`: intervals before the newest recomputed on every run (late data).
    pub lookback: Option<u32>,
    /// For `incremental`: the first interval of a full rebuild (`YYYY-MM-DD`, the first of a
    /// month for `grain = "month"`).
    pub start: Option<String>,
    /// Who to ask about this job.
    #[serde(default)]
    pub owner: String,
    /// Free-form labels, selectable with `tag:NAME`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where and how the result is published.
    #[serde(default)]
    pub output: RawOutput,
    /// Values bound to `$name` placeholders in the SQL (strings, integers, floats, booleans).
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// Data checks run on the job's result before it is published; any failing check fails the
    /// job and nothing is published.
    #[serde(default)]
    pub checks: Vec<RawCheck>,
    /// What `retention close-month` does with this job's table: freeze its rows for the month, or
    /// list them as open items when the month is closed.
    pub close: Option<RawClose>,
    /// Which day `$as_of` (a DATE) is for this job when the run does not set one with `--as-of`:
    /// `latest` (default: the latest order day in the data, resolved once per run), `today` (the
    /// clock's UTC day) or a fixed `YYYY-MM-DD`.
    pub as_of: Option<String>,
}

/// Whether a job rebuilds its table or computes it by interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    #[default]
    Full,
    Incremental,
}

/// `[close]` of a job spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClose {
    /// Column holding the `YYYY-MM` month a row belongs to.
    pub month_column: String,
    /// `freeze`: a closed month's rows are snapshotted and every later run shows them exactly as
    /// frozen. `warn`: rows of the month being closed are open items, listed as a warning.
    #[serde(default)]
    pub on_close: OnClose,
    /// For `freeze`: an integer column naming the source record each row accounts for (such as a
    /// ledger `entry_id`). Frozen ids go to `_closed_entries`, so jobs can tell which records
    /// arrived after a close.
    pub record_id_column: Option<String>,
}

/// What closing a month does to a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnClose {
    #[default]
    Freeze,
    Warn,
}

/// A validated `[close]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseSpec {
    pub month_column: String,
    pub on_close: OnClose,
    pub record_id_column: Option<String>,
}

/// `[[checks]]` of a job spec: a query over the job's result (by its output table name) and
/// the job's inputs that returns the violating rows; no rows means the check passes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    /// Short identifier, shown when the check fails.
    pub name: String,
    /// What the check guarantees.
    #[serde(default)]
    pub description: String,
    /// The query returning violations. Parameters (`$name`) are bound as in the job's SQL.
    pub sql: String,
}

/// A validated data check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub description: String,
    pub sql: String,
}

/// `[output]` of a job spec.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    /// Curated table name. Default: the job name.
    pub table: Option<String>,
    /// Partition columns of the curated table.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// `overwrite` (default): replace the table in one commit. `overwrite_partitions`: replace only
    /// the partitions this run produced.
    #[serde(default)]
    pub mode: WriteMode,
    /// Columns `retention optimize` Z-orders each partition's files by (the ones readers filter
    /// or join on, e.g. `customer_id`); none: it only compacts small files.
    #[serde(default)]
    pub zorder_by: Vec<String>,
    /// Rows of each written file in this order (ascending, nulls last): the columns readers
    /// filter, join or window on (`customer_id`, `order_ts`), so row groups hold narrow ranges of
    /// them and readers skip the others.
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// Rows per Parquet row group (the writer's default: 1,048,576). Smaller groups let a reader
    /// skip more of a file by its statistics.
    pub row_group_rows: Option<std::num::NonZeroUsize>,
    /// Columns whose values get a Parquet bloom filter in every row group: ids readers look up
    /// one at a time (`order_id`), where min/max statistics skip nothing.
    #[serde(default)]
    pub bloom_filter: Vec<String>,
}

/// How a job's rows are laid out in its table's Parquet files (`[output]` `sort_by`,
/// `row_group_rows`, `bloom_filter`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileLayout {
    /// Rows within each file are in this order (ascending, nulls last).
    pub sort_by: Vec<String>,
    /// Rows per row group; `None`: the writer's default.
    pub row_group_rows: Option<std::num::NonZeroUsize>,
    /// Columns with a bloom filter in every row group.
    pub bloom_filter: Vec<String>,
}

impl FileLayout {
    /// Every column it names, with the key that names it.
    pub fn columns(&self) -> impl Iterator<Item = (&'static str, &String)> {
        let sort = self.sort_by.iter().map(|c| ("output.sort_by", c));
        sort.chain(self.bloom_filter.iter().map(|c| ("output.bloom_filter", c)))
    }
}

/// How a job's result replaces the curated table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    #[default]
    Overwrite,
    OverwritePartitions,
}

impl std::fmt::Display for WriteMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteMode::Overwrite => "overwrite",
            WriteMode::OverwritePartitions => "overwrite_partitions",
        })
    }
}

/// A validated job spec.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub description: String,
    /// Output column name and what it means.
    pub columns: BTreeMap<String, String>,
    /// Path of the spec file.
    pub spec_path: PathBuf,
    /// Path of the SQL file.
    pub sql_path: PathBuf,
    /// SQL text.
    pub sql: String,
    pub schedule: Option<String>,
    pub owner: String,
    pub tags: Vec<String>,
    /// Curated table this job publishes.
    pub table: String,
    pub partition_by: Vec<String>,
    pub mode: WriteMode,
    /// Columns `optimize` Z-orders the table's files by.
    pub zorder_by: Vec<String>,
    /// How rows are laid out in the table's files.
    pub file_layout: FileLayout,
    /// Parameter name (without `$`) and value.
    pub params: Vec<(String, ScalarValue)>,
    /// Checks run on the result before publishing.
    pub checks: Vec<Check>,
    /// Month-close behaviour, if the table takes part in `close-month`.
    pub close: Option<CloseSpec>,
    /// The day `$as_of` is bound to when the run does not set one.
    pub as_of: AsOf,
    /// Whether the job's SQL or checks read `$as_of` (only those get a day resolved).
    pub uses_as_of: bool,
    /// How the daemon runs it: time zone, timeout, retries, catchup, downstream.
    pub policy: RunPolicy,
    /// For an incremental job: its interval settings.
    pub incremental: Option<Incremental>,
    /// SHA-256 of the spec file and the SQL text: a change means the table is rebuilt.
    pub spec_hash: String,
}

/// The parameter the engine binds for every job: the run's as-of day.
pub const AS_OF_PARAM: &str = "as_of";
/// The first day an incremental run computes (a DATE).
pub const START_PARAM: &str = "start";
/// The day after the last one an incremental run computes (a DATE).
pub const END_PARAM: &str = "end";

/// Whether SQL texts read `$as_of`.
fn uses_as_of<'a>(sql: &str, checks: impl Iterator<Item = &'a str>) -> bool {
    let reads = |t: &str| {
        t.match_indices("$as_of").any(|(i, m)| {
            !t[i + m.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    };
    reads(sql) || checks.into_iter().any(reads)
}

/// Validate a cron expression as tokio-cron-scheduler reads it (seconds required).
pub fn parse_cron(expr: &str) -> std::result::Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| format!("`{expr}` is not a valid schedule ({e}); expected six fields, seconds first, e.g. \"0 0 6 * * *\" for 06:00 UTC daily"))
}

/// Load every `jobs/*.toml` except `sources.toml`, in name order; reports all problems at once.
pub fn load_all(project_root: &Path, jobs_dir: &Path) -> Result<Vec<JobSpec>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(jobs_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .filter(|p| p.file_name().is_some_and(|n| n != SOURCES_FILE))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(source) => {
            return Err(Error::ReadFile {
                path: jobs_dir.to_path_buf(),
                source,
            });
        }
    };
    paths.sort();
    let mut specs: Vec<JobSpec> = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match load_one(project_root, &path) {
            Ok(spec) => specs.push(spec),
            Err(e) => problems.push(e),
        }
    }
    for (i, s) in specs.iter().enumerate() {
        if let Some(other) = specs[..i].iter().find(|o| o.table == s.table) {
            problems.push(Error::Config {
                path: s.spec_path.clone(),
                key: "output.table".into(),
                message: format!(
                    "job `{}` publishes table `{}`, which job `{}` publishes too",
                    s.name, s.table, other.name
                ),
            });
        }
    }
    Error::from_many(problems)?;
    Ok(specs)
}

/// Schedule, write mode and `[close]` problems of a raw spec.
fn mode_problems(raw: &RawJobSpec, bad: &dyn Fn(&str, String) -> Error) -> Vec<Error> {
    let mut problems = Vec::new();
    if let Some(cron) = &raw.schedule
        && let Err(m) = parse_cron(cron)
    {
        problems.push(bad("schedule", m));
    }
    if raw.output.mode == WriteMode::OverwritePartitions && raw.output.partition_by.is_empty() {
        problems.push(bad(
            "output.mode",
            "`overwrite_partitions` needs `output.partition_by`".into(),
        ));
    }
    if let Some(c) = raw
        .output
        .zorder_by
        .iter()
        .find(|c| raw.output.partition_by.contains(c))
    {
        problems.push(bad(
            "output.zorder_by",
            format!("`{c}` is a partition column: each file holds one value of it already"),
        ));
    }
    if let Some(c) = &raw.close {
        if c.on_close == OnClose::Warn && c.record_id_column.is_some() {
            problems.push(bad(
                "close.record_id_column",
                "only tables frozen on close (`on_close = \"freeze\"`) record ids".into(),
            ));
        }
        if c.on_close == OnClose::Freeze && raw.output.mode == WriteMode::OverwritePartitions {
            problems.push(bad(
                "close.on_close",
                "a frozen table must be rebuilt whole (`mode = \"overwrite\"`) so closed months can be overlaid".into(),
            ));
        }
    }
    problems
}

/// The incremental settings of a raw spec: all of `time_column`, `grain` and `start` for
/// `kind = "incremental"`, none of them otherwise.
fn spec_incremental(
    raw: &RawJobSpec,
    bad: &dyn Fn(&str, String) -> Error,
    problems: &mut Vec<Error>,
) -> Option<Incremental> {
    let given = raw.time_column.is_some()
        || raw.grain.is_some()
        || raw.lookback.is_some()
        || raw.start.is_some();
    if raw.kind == JobKind::Full {
        if given {
            problems.push(bad(
                "kind",
                "time_column, grain, lookback and start are for `kind = \"incremental\"`".into(),
            ));
        }
        return None;
    }
    let mut missing =
        |key: &str| problems.push(bad(key, "required by `kind = \"incremental\"`".into()));
    let (Some(time_column), Some(grain), Some(start)) = (&raw.time_column, raw.grain, &raw.start)
    else {
        for (key, absent) in [
            ("time_column", raw.time_column.is_none()),
            ("grain", raw.grain.is_none()),
            ("start", raw.start.is_none()),
        ] {
            if absent {
                missing(key);
            }
        }
        return None;
    };
    let start = match start.parse::<chrono::NaiveDate>() {
        Ok(d) if is_aligned(grain, d) => d,
        Ok(_) => {
            problems.push(bad(
                "start",
                format!("`{start}` must be the first day of a month for `grain = \"month\"`"),
            ));
            return None;
        }
        Err(e) => {
            problems.push(bad(
                "start",
                format!("`{start}` is not a day ({e}): expected YYYY-MM-DD"),
            ));
            return None;
        }
    };
    if raw.close.is_some() {
        problems.push(bad(
            "kind",
            "a table that month close freezes is rebuilt whole: it cannot be incremental".into(),
        ));
    }
    if raw.output.mode == WriteMode::OverwritePartitions {
        problems.push(bad(
            "output.mode",
            "an incremental job replaces its intervals itself: leave `mode` at `overwrite`".into(),
        ));
    }
    for p in [START_PARAM, END_PARAM] {
        if raw.params.contains_key(p) {
            problems.push(bad(
                &format!("params.{p}"),
                format!("`${p}` is bound by the engine for an incremental job"),
            ));
        }
    }
    Some(Incremental {
        time_column: time_column.clone(),
        grain,
        lookback: raw.lookback.unwrap_or(0),
        start,
    })
}

/// SHA-256 of a spec file and its SQL, as hex.
fn spec_hash(spec_text: &str, sql: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(spec_text.as_bytes());
    h.update([0u8]);
    h.update(sql.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The spec's `as_of` (default `latest`); `as_of` in `[params]` is refused: the engine binds it.
fn spec_as_of(
    raw: &RawJobSpec,
    bad: &dyn Fn(&str, String) -> Error,
    problems: &mut Vec<Error>,
) -> AsOf {
    let as_of = match raw.as_of.as_deref().map(str::parse::<AsOf>) {
        None => AsOf::Latest,
        Some(Ok(a)) => a,
        Some(Err(m)) => {
            problems.push(bad("as_of", m));
            AsOf::Latest
        }
    };
    if raw.params.contains_key(AS_OF_PARAM) {
        problems.push(bad(
            "params.as_of",
            "`$as_of` is the run's as-of day, bound by the engine as a DATE: set `as_of = \"latest\"`, `\"today\"` or a day at the top of the spec, or pass `--as-of` to `retention run`".into(),
        ));
    }
    as_of
}

/// Load and validate one spec file and its SQL.
pub fn load_one(project_root: &Path, path: &Path) -> Result<JobSpec> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    let raw: RawJobSpec = toml::from_str(&text).map_err(|e| Error::toml(path, &text, e))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let bad = |key: &str, message: String| Error::Config {
        path: path.to_path_buf(),
        key: key.into(),
        message,
    };
    let mut problems = Vec::new();

    let name = raw.name.clone().unwrap_or_else(|| stem.clone());
    if name != stem {
        problems.push(bad(
            "name",
            format!("`{name}` differs from the file name `{stem}.toml`; they must match"),
        ));
    }
    if !is_identifier(&name) {
        problems.push(bad("name", format!("`{name}` must be lower_snake_case")));
    }
    let table = raw.output.table.clone().unwrap_or_else(|| name.clone());
    if !is_identifier(&table) {
        problems.push(bad(
            "output.table",
            format!("`{table}` must be lower_snake_case"),
        ));
    }
    if table.starts_with('_') {
        problems.push(bad(
            "output.table",
            format!("`{table}`: names starting with `_` are reserved"),
        ));
    }
    problems.extend(mode_problems(&raw, &bad));
    let as_of = spec_as_of(&raw, &bad, &mut problems);
    let incremental = spec_incremental(&raw, &bad, &mut problems);
    let policy = run_policy::parse(
        raw.timezone.as_deref(),
        raw.timeout.as_deref(),
        raw.retries,
        raw.catchup,
        raw.trigger_downstream,
    )
    .unwrap_or_else(|bad_keys| {
        problems.extend(bad_keys.into_iter().map(|(k, m)| bad(k, m)));
        RunPolicy::default()
    });
    let mut params = Vec::new();
    for (k, v) in &raw.params {
        match param_value(v) {
            Ok(value) => params.push((k.clone(), value)),
            Err(message) => problems.push(bad(&format!("params.{k}"), message)),
        }
    }
    let sql_rel = raw.sql.clone().unwrap_or_else(|| format!("sql/{name}.sql"));
    let sql_path = project_root.join(&sql_rel);
    let sql = match std::fs::read_to_string(&sql_path) {
        Ok(s) => s,
        Err(e) => {
            problems.push(bad(
                "sql",
                format!("cannot read SQL file {}: {e}", sql_path.display()),
            ));
            String::new()
        }
    };
    Error::from_many(problems)?;
    let reads_as_of = uses_as_of(&sql, raw.checks.iter().map(|c| c.sql.as_str()));
    let hash = spec_hash(&text, &sql);
    Ok(JobSpec {
        name,
        description: raw.description,
        columns: raw.columns,
        spec_path: path.to_path_buf(),
        sql_path,
        sql,
        schedule: raw.schedule,
        owner: raw.owner,
        tags: raw.tags,
        table,
        partition_by: raw.output.partition_by,
        mode: raw.output.mode,
        zorder_by: raw.output.zorder_by,
        file_layout: FileLayout {
            sort_by: raw.output.sort_by,
            row_group_rows: raw.output.row_group_rows,
            bloom_filter: raw.output.bloom_filter,
        },
        params,
        checks: raw
            .checks
            .into_iter()
            .map(|c| Check {
                name: c.name,
                description: c.description,
                sql: c.sql,
            })
            .collect(),
        uses_as_of: reads_as_of,
        as_of,
        policy,
        incremental,
        spec_hash: hash,
        close: raw.close.map(|c| CloseSpec {
            month_column: c.month_column,
            on_close: c.on_close,
            record_id_column: c.record_id_column,
        }),
    })
}

#[cfg(test)]
impl JobSpec {
    /// A minimal spec for unit tests: `select 1`, overwrite, no schedule, defaults elsewhere.
    pub(crate) fn test_spec(name: &str) -> JobSpec {
        JobSpec {
            name: name.into(),
            description: String::new(),
            columns: BTreeMap::new(),
            spec_path: PathBuf::from(format!("jobs/{name}.toml")),
            sql_path: PathBuf::from(format!("sql/{name}.sql")),
            sql: "select 1".into(),
            schedule: None,
            owner: String::new(),
            tags: vec![],
            table: name.into(),
            partition_by: vec![],
            mode: WriteMode::Overwrite,
            zorder_by: vec![],
            file_layout: FileLayout::default(),
            params: vec![],
            checks: vec![],
            close: None,
            as_of: AsOf::Latest,
            uses_as_of: false,
            policy: RunPolicy::default(),
            incremental: None,
            spec_hash: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn loads_spec_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "sql/daily.sql", "select 1 as x");
        write(
            dir.path(),
            "jobs/daily.toml",
            "description = \"d\"\nschedule = \"0 0 6 * * *\"\ntags = [\"core\"]\n[output]\npartition_by = [\"x\"]\nmode = \"overwrite_partitions\"\n[params]\nmin_orders = 2\n",
        );
        let specs = load_all(dir.path(), &dir.path().join("jobs")).unwrap();
        assert_eq!(specs.len(), 1);
        let s = &specs[0];
        assert_eq!((s.name.as_str(), s.table.as_str()), ("daily", "daily"));
        assert_eq!(s.mode, WriteMode::OverwritePartitions);
        assert_eq!(s.sql, "select 1 as x");
        assert_eq!(
            s.params,
            vec![("min_orders".to_string(), ScalarValue::Int64(Some(2)))]
        );
    }

    #[test]
    fn unknown_field_and_bad_cron_are_reported_with_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "sql/a.sql", "select 1");
        write(dir.path(), "sql/b.sql", "select 1");
        write(dir.path(), "jobs/a.toml", "descripton = \"typo\"\n");
        write(dir.path(), "jobs/b.toml", "schedule = \"0 6 * * *\"\n");
        let e = load_all(dir.path(), &dir.path().join("jobs"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("2 problem(s)"), "{e}");
        assert!(e.contains("a.toml:1:1: unknown field `descripton`"), "{e}");
        assert!(
            e.contains("b.toml: schedule: `0 6 * * *` is not a valid schedule"),
            "{e}"
        );
    }

    #[test]
    fn the_file_layout_is_read_and_a_row_group_of_no_rows_is_refused_where_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "sql/a.sql", "select 1 as id");
        let layout =
            "[output]\nsort_by = [\"id\"]\nrow_group_rows = 4096\nbloom_filter = [\"id\"]\n";
        write(dir.path(), "jobs/a.toml", layout);
        let specs = load_all(dir.path(), &dir.path().join("jobs")).unwrap();
        let expected = FileLayout {
            sort_by: vec!["id".into()],
            row_group_rows: std::num::NonZeroUsize::new(4096),
            bloom_filter: vec!["id".into()],
        };
        assert_eq!(specs[0].file_layout, expected);
        write(dir.path(), "jobs/a.toml", &layout.replace("4096", "0"));
        let e = load_all(dir.path(), &dir.path().join("jobs"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.toml:3:18: invalid value: integer `0`, expected a nonzero usize"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_output_table() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "sql/a.sql", "select 1");
        write(dir.path(), "sql/b.sql", "select 1");
        write(dir.path(), "jobs/a.toml", "[output]\ntable = \"t\"\n");
        write(dir.path(), "jobs/b.toml", "[output]\ntable = \"t\"\n");
        let e = load_all(dir.path(), &dir.path().join("jobs"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("job `b` publishes table `t`, which job `a` publishes too"),
            "{e}"
        );
    }

    #[test]
    fn as_of_is_the_engines_not_a_param() {
        assert!(uses_as_of(
            "select * from t where d <= $as_of",
            std::iter::empty()
        ));
        assert!(!uses_as_of("select $as_of_x", std::iter::empty()));
        assert!(uses_as_of("select 1", ["select $as_of"].into_iter()));
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "sql/a.sql", "select CAST($as_of AS DATE) AS d");
        write(dir.path(), "jobs/a.toml", "as_of = \"today\"\n");
        let a = load_one(dir.path(), &dir.path().join("jobs/a.toml")).unwrap();
        assert_eq!((a.as_of, a.uses_as_of), (AsOf::Today, true));
        write(
            dir.path(),
            "jobs/a.toml",
            "as_of = \"2026-13-01\"\n[params]\nas_of = \"latest\"\n",
        );
        let e = load_one(dir.path(), &dir.path().join("jobs/a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("as_of: `2026-13-01` is not a date"), "{e}");
        assert!(
            e.contains("params.as_of: `$as_of` is the run's as-of day"),
            "{e}"
        );
    }

    #[test]
    fn cron_accepts_seconds_first() {
        assert!(parse_cron("0 30 6 * * Mon-Fri").is_ok());
        assert!(parse_cron("61 * * * * *").is_err());
    }
}
