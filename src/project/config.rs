//! The project file `retention.toml`: each setting is declared once, in a settings struct that is
//! both the file's `[section]` (serde) and its flag and environment variable (clap); flags win over
//! the environment, both over the file. `Project` is the validated result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use datafusion::common::ScalarValue;
use serde::Deserialize;
use url::Url;

use crate::error::{Error, Result};
use crate::project::location::parse_location;
use crate::project::params::param_value;
use crate::values::{MemoryLimit, ReadCacheSize, physical_memory};

/// Name of the project file at the project's root.
pub const PROJECT_FILE: &str = "retention.toml";

/// The memory limit when none is configured: a share of physical memory, so a run that outgrows
/// the machine fails with DataFusion's "resources exhausted" (or spills) instead of being killed
/// by the OS.
pub const DEFAULT_MEMORY_LIMIT: &str = "75%";

/// `retention.toml` as written. Every key is optional; defaults suit a laptop.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    /// Where raw and curated data live.
    #[serde(default)]
    pub storage: StorageSettings,
    /// Engine resources.
    #[serde(default)]
    pub engine: EngineSettings,
    /// Curated-table history kept for time travel.
    #[serde(default)]
    pub history: HistorySettings,
    /// DataFusion settings passed through `ConfigOptions::set` (unknown keys fail).
    #[serde(default)]
    pub datafusion: BTreeMap<String, toml::Value>,
    /// Parameters every job gets (a job's own `[params]` win), e.g. `reporting_currency`.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// How the engine resolves the as-of day `latest`.
    #[serde(default)]
    pub as_of: AsOfSettings,
    /// The daemon (`retention serve`).
    #[serde(default)]
    pub serve: ServeSettings,
    /// The SQL endpoints (`retention serve-sql`).
    #[serde(default)]
    pub serve_sql: SqlServerSettings,
    /// The scheduled report page (`retention report`, written by the daemon).
    #[serde(default)]
    pub report: ReportSettings,
}

/// `[report]`: when the daemon writes the report page into the curated store's `reports/`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// Six-field cron, seconds first, e.g. "0 0 8 * * Mon" (weekly, Monday 08:00). Without it the
    /// daemon writes no report.
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in (default UTC).
    pub timezone: Option<String>,
}

/// The report's validated schedule.
#[derive(Debug, Clone)]
pub struct ReportSchedule {
    pub expr: String,
    pub timezone: chrono_tz::Tz,
}

/// `[serve]`: the daemon's HTTP endpoint.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// Where `/healthz`, `/metrics` and `/runs` listen (default `127.0.0.1:9470`; `serve --http`
    /// wins, `serve --no-http` turns it off).
    pub http: Option<String>,
}

/// `[serve_sql]`: the read-only SQL endpoints for BI tools. Flags of `serve-sql` win over the
/// environment, both over the file; relative paths are relative to the project root.
#[derive(Debug, Default, Clone, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct SqlServerSettings {
    /// PostgreSQL wire protocol address (serve_sql.pg; default 127.0.0.1:5433; port 0 picks a
    /// free port and logs it).
    #[arg(long, env = "RETENTION_SQL_PG")]
    pub pg: Option<String>,
    /// Arrow Flight SQL address (serve_sql.flight; default 127.0.0.1:50051).
    #[arg(long, env = "RETENTION_SQL_FLIGHT")]
    pub flight: Option<String>,
    /// Users file: `[[user]]` entries with `name` and the `password` hash printed by `retention
    /// sql-user` (serve_sql.users_file). RETENTION_SQL_USER and RETENTION_SQL_PASSWORD add one
    /// user from the environment.
    #[arg(long = "users", env = "RETENTION_SQL_USERS_FILE")]
    pub users_file: Option<String>,
    /// TLS certificate chain, PEM (serve_sql.tls_cert; with tls_key, both endpoints use TLS).
    #[arg(long, env = "RETENTION_SQL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// TLS private key, PEM (serve_sql.tls_key).
    #[arg(long, env = "RETENTION_SQL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// Longest a statement may run, planning and streaming included (serve_sql.statement_timeout;
    /// default 5m). A client's shorter `SET statement_timeout` wins.
    #[arg(long, env = "RETENTION_SQL_STATEMENT_TIMEOUT")]
    pub statement_timeout: Option<String>,
    /// Connections open at once per endpoint (serve_sql.max_connections; default 64).
    #[arg(long, env = "RETENTION_SQL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Memory one query may hold: a size (1GiB) or a share of physical memory (10%)
    /// (serve_sql.query_memory_limit; default 25%).
    #[arg(long, env = "RETENTION_SQL_QUERY_MEMORY_LIMIT")]
    pub query_memory_limit: Option<String>,
    /// Also serve the raw sources, in schema `raw` (serve_sql.raw; default false).
    #[arg(long = "raw-schema", id = "serve_sql_raw", env = "RETENTION_SQL_RAW")]
    pub raw: Option<bool>,
}

impl SqlServerSettings {
    /// These settings laid over `file`'s.
    pub fn over(self, file: SqlServerSettings) -> SqlServerSettings {
        SqlServerSettings {
            pg: self.pg.or(file.pg),
            flight: self.flight.or(file.flight),
            users_file: self.users_file.or(file.users_file),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            statement_timeout: self.statement_timeout.or(file.statement_timeout),
            max_connections: self.max_connections.or(file.max_connections),
            query_memory_limit: self.query_memory_limit.or(file.query_memory_limit),
            raw: self.raw.or(file.raw),
        }
    }
}

/// The daemon's HTTP address when none is configured: loopback only.
pub const DEFAULT_HTTP: &str = "127.0.0.1:9470";

/// `[as_of]`: `latest` is the latest day of `column` in `table` (a job's output or a source), read
/// once per run after that table's job has run in it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsOfSettings {
    /// Default the raw `orders` source (every order, of any status).
    pub latest_table: Option<String>,
    /// A date or timestamp column, cast to its UTC day. Default `order_ts`.
    pub latest_column: Option<String>,
}

/// `[storage]`: object-store URLs (`file://`, `s3://`, `gs://`, `az://`, `memory://`) or local paths.
#[derive(Debug, Default, Clone, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Raw data root URL or path (storage.raw; default ./lake/raw).
    #[arg(long, global = true, env = "RETENTION_RAW")]
    pub raw: Option<String>,
    /// Curated data root URL or path (storage.curated; default ./lake/curated).
    #[arg(long, global = true, env = "RETENTION_CURATED")]
    pub curated: Option<String>,
    /// Memory that keeps small Parquet files (up to 8 MiB) for the later reads of a run, one
    /// request per file: a size, `off`, or `auto` (storage.read_cache; default auto: 256MiB, or
    /// a sixteenth of the memory limit when less; off when every root is in memory).
    #[arg(long, global = true, env = "RETENTION_READ_CACHE")]
    pub read_cache: Option<String>,
}

/// `[engine]`: memory and parallelism.
#[derive(Debug, Default, Clone, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// Query memory limit: a size (4GiB), a share of physical memory (60%), or none
    /// (engine.memory_limit; default 75%).
    #[arg(long, global = true, env = "RETENTION_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// DataFusion target partitions (engine.target_partitions; default: the number of cores,
    /// and at least 8).
    #[arg(long, global = true, env = "RETENTION_TARGET_PARTITIONS")]
    pub target_partitions: Option<usize>,
    /// Jobs run at once (engine.jobs; default 1 below 4 cores, else 2). Set per command with
    /// `--jobs`.
    #[arg(skip)]
    pub jobs: Option<usize>,
    /// Where jobs' queries execute: `local` (in this process) or `distributed` (on the workers
    /// below) (engine.kind; default: distributed when workers are given, else local).
    #[arg(long = "engine", global = true, env = "RETENTION_ENGINE")]
    pub kind: Option<String>,
    /// Addresses of `retention worker` processes, e.g. http://10.0.0.7:7470 (engine.workers;
    /// comma-separated on the command line).
    #[arg(long, global = true, env = "RETENTION_WORKERS", value_delimiter = ',')]
    pub workers: Option<Vec<String>>,
    /// PEM file of the CA that signed the workers' TLS certificates: with it, coordinators and
    /// workers reach workers over TLS (`https://` addresses) (engine.worker_ca).
    #[arg(long, global = true, env = "RETENTION_WORKER_CA")]
    pub worker_ca: Option<String>,
}

/// `[history]`: how long old curated versions stay readable.
#[derive(Debug, Default, Clone, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    /// Days of Delta log kept for time travel (history.log_retention_days; default 30).
    #[arg(long, global = true, env = "RETENTION_LOG_RETENTION_DAYS")]
    pub log_retention_days: Option<u32>,
    /// Hours a replaced file is kept before vacuum (history.deleted_file_retention_hours;
    /// default 168).
    #[arg(long, global = true, env = "RETENTION_DELETED_FILE_RETENTION_HOURS")]
    pub deleted_file_retention_hours: Option<u32>,
}

/// Settings from flags and environment variables, laid over the file's.
#[derive(Debug, Default, Clone, Args)]
pub struct Overrides {
    #[command(flatten)]
    pub storage: StorageSettings,
    #[command(flatten)]
    pub engine: EngineSettings,
    #[command(flatten)]
    pub history: HistorySettings,
}

impl Overrides {
    /// Overrides of the raw and curated roots only (tests, tools).
    pub fn with_storage(raw: Option<String>, curated: Option<String>) -> Overrides {
        Overrides {
            storage: StorageSettings {
                raw,
                curated,
                read_cache: None,
            },
            ..Default::default()
        }
    }
}

impl StorageSettings {
    fn over(self, file: StorageSettings) -> StorageSettings {
        StorageSettings {
            raw: self.raw.or(file.raw),
            curated: self.curated.or(file.curated),
            read_cache: self.read_cache.or(file.read_cache),
        }
    }
}

impl EngineSettings {
    fn over(self, file: EngineSettings) -> EngineSettings {
        EngineSettings {
            memory_limit: self.memory_limit.or(file.memory_limit),
            target_partitions: self.target_partitions.or(file.target_partitions),
            jobs: self.jobs.or(file.jobs),
            kind: self.kind.or(file.kind),
            workers: self.workers.or(file.workers),
            worker_ca: self.worker_ca.or(file.worker_ca),
        }
    }
}

impl HistorySettings {
    fn over(self, file: HistorySettings) -> HistorySettings {
        HistorySettings {
            log_retention_days: self.log_retention_days.or(file.log_retention_days),
            deleted_file_retention_hours: self
                .deleted_file_retention_hours
                .or(file.deleted_file_retention_hours),
        }
    }
}

/// The validated project: everything after this trusts these values.
#[derive(Debug, Clone)]
pub struct Project {
    /// Directory holding `retention.toml`, `jobs/` and `sql/`.
    pub root: PathBuf,
    /// Root URL of the raw tables, ending in `/`.
    pub raw: Url,
    /// Root URL of the curated tables, ending in `/`.
    pub curated: Url,
    /// Memory for small Parquet files read again within a run.
    pub read_cache: ReadCacheSize,
    /// Memory limit in bytes, if any.
    pub memory_limit: Option<usize>,
    pub target_partitions: Option<usize>,
    /// Concurrent jobs.
    pub jobs: usize,
    /// The workers that execute jobs' queries, when the engine is distributed.
    pub cluster: Option<Cluster>,
    /// The CA that signed the workers' certificates: calls to workers use TLS.
    pub worker_ca: Option<PathBuf>,
    pub log_retention_days: u32,
    pub deleted_file_retention_hours: u32,
    /// DataFusion `key = value` settings, in file order.
    pub datafusion: Vec<(String, String)>,
    /// Project-wide job parameters (`[params]`): name and value.
    pub params: Vec<(String, ScalarValue)>,
    /// `latest` is the latest UTC day of this column in this table.
    pub latest_day: LatestDay,
    /// The daemon's HTTP address.
    pub http: std::net::SocketAddr,
    /// `[serve_sql]` as written (validated by `serve-sql`, after its flags are laid over it).
    pub serve_sql: SqlServerSettings,
    /// When the daemon writes the report, if ever.
    pub report: Option<ReportSchedule>,
}

/// A distributed engine's workers (`[engine] kind = "distributed"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Each worker's gRPC address (`http://host:port`), in the file's order.
    pub workers: Vec<Url>,
}

/// `engine.kind` and `engine.workers` validated: `None` for the local engine.
fn cluster(
    kind: Option<&str>,
    workers: Option<Vec<String>>,
    bad: &dyn Fn(&str, String) -> Error,
) -> Result<Option<Cluster>> {
    let workers = workers.unwrap_or_default();
    let distributed = match kind {
        None => !workers.is_empty(),
        Some("local") if workers.is_empty() => false,
        Some("local") => {
            return Err(bad(
                "engine.workers",
                "workers are given but engine.kind is \"local\": remove them or set kind = \"distributed\"".into(),
            ));
        }
        Some("distributed") => true,
        Some(other) => {
            return Err(bad(
                "engine.kind",
                format!("`{other}` is not an engine: expected \"local\" or \"distributed\""),
            ));
        }
    };
    if !distributed {
        return Ok(None);
    }
    if workers.is_empty() {
        return Err(bad(
            "engine.workers",
            "a distributed engine needs at least one worker address, e.g. [\"http://10.0.0.7:7470\"]".into(),
        ));
    }
    let urls = workers
        .iter()
        .map(|w| worker_url(w).map_err(|m| bad("engine.workers", m)))
        .collect::<Result<Vec<Url>>>()?;
    Ok(Some(Cluster { workers: urls }))
}

/// A worker address: `http://` or `https://`, a host and a port, nothing else.
fn worker_url(text: &str) -> std::result::Result<Url, String> {
    let expected = "expected http://HOST:PORT, e.g. http://10.0.0.7:7470";
    let url =
        Url::parse(text.trim()).map_err(|e| format!("`{text}` is not a URL ({e}): {expected}"))?;
    // The port must be written, even a scheme's default (which the URL drops).
    let port_written = text
        .trim()
        .trim_end_matches('/')
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && port_written
        && matches!(url.path(), "" | "/")
        && url.query().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if plain {
        Ok(url)
    } else {
        Err(format!("`{text}` is not a worker address: {expected}"))
    }
}

/// Where the as-of day `latest` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestDay {
    pub table: String,
    pub column: String,
}

impl Project {
    /// Load `<root>/retention.toml` (absent means all defaults) and apply overrides.
    pub fn load(root: &Path, overrides: &Overrides) -> Result<Project> {
        let path = root.join(PROJECT_FILE);
        let raw = if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            toml::from_str::<RawProject>(&text).map_err(|e| Error::toml(&path, &text, e))?
        } else {
            RawProject::default()
        };
        Project::from_raw(root, &path, raw, overrides)
    }

    /// Validate a raw project file; `path` is only used in error messages.
    pub fn from_raw(
        root: &Path,
        path: &Path,
        raw: RawProject,
        overrides: &Overrides,
    ) -> Result<Project> {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let overrides = overrides.clone();
        let storage = overrides.storage.over(raw.storage);
        let engine = overrides.engine.over(raw.engine);
        let history = overrides.history.over(raw.history);
        let mut problems = Vec::new();
        let bad = |key: &str, message: String| Error::Config {
            path: path.to_path_buf(),
            key: key.into(),
            message,
        };
        let mut location = |key: &str, text: Option<String>, default: &str| {
            parse_location(&root, text.as_deref().unwrap_or(default))
                .map_err(|message| problems.push(bad(key, message)))
                .ok()
        };
        let raw_url = location("storage.raw", storage.raw, "./lake/raw");
        let curated_url = location("storage.curated", storage.curated, "./lake/curated");
        let read_cache = storage
            .read_cache
            .as_deref()
            .unwrap_or("auto")
            .parse::<ReadCacheSize>()
            .map_err(|message| problems.push(bad("storage.read_cache", message)))
            .unwrap_or(ReadCacheSize::Off);
        let memory_limit = match engine
            .memory_limit
            .as_deref()
            .unwrap_or(DEFAULT_MEMORY_LIMIT)
            .parse::<MemoryLimit>()
        {
            Ok(limit) => memory_bytes(limit),
            Err(message) => {
                problems.push(bad("engine.memory_limit", message));
                None
            }
        };
        if engine.target_partitions == Some(0) {
            problems.push(bad("engine.target_partitions", "must be at least 1".into()));
        }
        let jobs = engine.jobs.unwrap_or_else(|| default_jobs(cores()));
        if jobs == 0 {
            problems.push(bad("engine.jobs", "must be at least 1".into()));
        }
        let worker_ca = engine.worker_ca.as_deref().map(|p| root.join(p));
        let cluster = cluster(engine.kind.as_deref(), engine.workers, &bad)
            .map_err(|e| problems.push(e))
            .unwrap_or(None);
        let plain_and_tls = cluster.as_ref().is_some_and(|c| {
            let tls = c.workers.iter().filter(|u| u.scheme() == "https").count();
            (tls > 0 && worker_ca.is_none()) || (worker_ca.is_some() && tls < c.workers.len())
        });
        if plain_and_tls {
            problems.push(bad(
                "engine.worker_ca",
                "workers are reached over TLS exactly when engine.worker_ca is set: give it with https:// addresses, and only then".into(),
            ));
        }
        let datafusion = datafusion_settings(raw.datafusion, &bad, &mut problems);
        let params = project_params(&raw.params, &bad, &mut problems);
        let http_text = raw.serve.http.as_deref().unwrap_or(DEFAULT_HTTP);
        let http = http_text
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                problems.push(bad(
                    "serve.http",
                    format!("`{http_text}` is not an address ({e}): expected IP:PORT, e.g. \"127.0.0.1:9470\""),
                ))
            })
            .ok();
        let report = report_schedule(raw.report, &bad, &mut problems);
        Error::from_many(problems)?;
        Ok(Project {
            params,
            root,
            raw: raw_url.expect("checked"),
            curated: curated_url.expect("checked"),
            read_cache,
            memory_limit,
            target_partitions: engine.target_partitions,
            jobs,
            cluster,
            worker_ca,
            log_retention_days: history.log_retention_days.unwrap_or(30),
            deleted_file_retention_hours: history.deleted_file_retention_hours.unwrap_or(168),
            datafusion,
            latest_day: LatestDay {
                table: raw.as_of.latest_table.unwrap_or_else(|| "orders".into()),
                column: raw.as_of.latest_column.unwrap_or_else(|| "order_ts".into()),
            },
            http: http.expect("checked"),
            serve_sql: raw.serve_sql,
            report,
        })
    }

    /// Directory of job specs.
    pub fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }
}

/// The pool size for a limit on this machine; a share where physical memory is unknown is no
/// limit, said once in the log.
fn memory_bytes(limit: MemoryLimit) -> Option<usize> {
    let physical = physical_memory();
    if physical.is_none() && matches!(limit, MemoryLimit::Share(_)) {
        tracing::warn!(
            "physical memory is unknown on this system: engine.memory_limit as a share means no limit; give a size"
        );
    }
    limit.bytes(physical)
}

/// `[report]` checked: a valid cron and a known time zone.
fn report_schedule(
    settings: ReportSettings,
    bad: &dyn Fn(&str, String) -> Error,
    problems: &mut Vec<Error>,
) -> Option<ReportSchedule> {
    let timezone = match settings.timezone.as_deref().unwrap_or("UTC").parse() {
        Ok(tz) => tz,
        Err(_) => {
            problems.push(bad(
                "report.timezone",
                format!(
                    "`{}` is not an IANA time zone (e.g. \"Europe/Berlin\")",
                    settings.timezone.unwrap_or_default()
                ),
            ));
            return None;
        }
    };
    let expr = settings.schedule?;
    match crate::project::spec::parse_cron(&expr) {
        Ok(_) => Some(ReportSchedule { expr, timezone }),
        Err(message) => {
            problems.push(bad("report.schedule", message));
            None
        }
    }
}

/// `[datafusion]` keys, checked against DataFusion's options now so a typo fails at load.
fn datafusion_settings(
    table: BTreeMap<String, toml::Value>,
    bad: &dyn Fn(&str, String) -> Error,
    problems: &mut Vec<Error>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                problems.push(bad(
                    &format!("datafusion.{key}"),
                    format!(
                        "expected a string, number or boolean, found {}",
                        other.type_str()
                    ),
                ));
                continue;
            }
        };
        // `distributed.*`: datafusion-distributed's planner settings (a distributed engine).
        let full = if key.starts_with("datafusion.") || key.starts_with("distributed.") {
            key
        } else {
            format!("datafusion.{key}")
        };
        let mut probe = datafusion::config::ConfigOptions::new();
        probe
            .extensions
            .insert(datafusion_distributed::DistributedConfig::default());
        if let Err(e) = probe.set(&full, &text) {
            problems.push(bad(&full, e.to_string()));
        }
        out.push((full, text));
    }
    out
}

/// `[params]`, with finance's reporting currency defaulting to USD.
fn project_params(
    table: &BTreeMap<String, toml::Value>,
    bad: &dyn Fn(&str, String) -> Error,
    problems: &mut Vec<Error>,
) -> Vec<(String, ScalarValue)> {
    let mut params = Vec::new();
    if !table.contains_key("reporting_currency") {
        params.push((
            "reporting_currency".to_string(),
            ScalarValue::Utf8(Some("USD".into())),
        ));
    }
    if table.contains_key(crate::project::spec::AS_OF_PARAM) {
        problems.push(bad(
            "params.as_of",
            "`$as_of` is the run's as-of day, bound by the engine as a DATE: set `as_of` in a job spec, or pass `--as-of` to `retention run`".into(),
        ));
    }
    for (k, v) in table {
        match param_value(v) {
            Ok(value) => params.push((k.clone(), value)),
            Err(message) => problems.push(bad(&format!("params.{k}"), message)),
        }
    }
    params
}

/// The cores this process may run on (1 when the system cannot say).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// DataFusion's partitions per query when the project does not say: one per core, and at least
/// 8. With one partition per core on 2 cores, a core whose partition finishes first (a skewed
/// key, a join that built its table) waits for the other, and each hash table holds half the
/// keys; with 8, a free core takes the next partition and each table is a quarter the size. At
/// 10M orders on 2 cores, five jobs run alone 3 times each took 173.9 s with 2 partitions and
/// 160.8 s with 8 (docs/BENCHMARKS.md).
pub fn default_target_partitions(cores: usize) -> usize {
    cores.max(8)
}

/// Jobs run at once when the project does not say: every job already uses all the cores
/// (`target_partitions`), so on 2 or 3 cores a second job only competes for them (the whole DAG
/// at 10M orders took 165-187 s one job at a time against 204-361 s two at a time on 2 cores);
/// from 4 cores on, a second job overlaps one job's reads and writes with another's compute.
pub fn default_jobs(cores: usize) -> usize {
    if cores < 4 { 1 } else { 2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_cache_is_auto_off_or_a_size() {
        let cache = |text: &str| load(text, &Overrides::default()).map(|p| p.read_cache);
        assert_eq!(cache("").unwrap(), ReadCacheSize::Auto);
        assert_eq!(
            cache("[storage]\nread_cache = \"off\"\n").unwrap(),
            ReadCacheSize::Off
        );
        assert_eq!(
            cache("[storage]\nread_cache = \"64MiB\"\n").unwrap(),
            ReadCacheSize::Bytes(64 << 20)
        );
        let e = cache("[storage]\nread_cache = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("storage.read_cache") && e.contains("expected a size"),
            "{e}"
        );
        // `auto` is off when every root is in memory, else 256 MiB or a sixteenth of the
        // memory limit, whichever is less.
        assert_eq!(ReadCacheSize::Auto.bytes(true, None), None);
        assert_eq!(ReadCacheSize::Auto.bytes(false, None), Some(256 << 20));
        assert_eq!(
            ReadCacheSize::Auto.bytes(false, Some(16 << 30)),
            Some(256 << 20)
        );
        assert_eq!(
            ReadCacheSize::Auto.bytes(false, Some(2 << 30)),
            Some(128 << 20)
        );
        assert_eq!(ReadCacheSize::Bytes(5).bytes(true, Some(1 << 20)), Some(5));
        assert_eq!(ReadCacheSize::Off.bytes(false, None), None);
    }

    #[test]
    fn the_engine_is_local_or_distributed_over_named_workers() {
        let cluster = |text: &str, over: &Overrides| load(text, over).map(|p| p.cluster);
        let none = Overrides::default();
        assert_eq!(cluster("", &none).unwrap(), None);
        assert_eq!(
            cluster("[engine]\nkind = \"local\"\n", &none).unwrap(),
            None
        );
        let two = "[engine]\nkind = \"distributed\"\nworkers = [\"http://10.0.0.7:7470\", \"http://w2.internal:80\"]\n";
        let workers: Vec<String> = cluster(two, &none)
            .unwrap()
            .unwrap()
            .workers
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(workers, ["http://10.0.0.7:7470/", "http://w2.internal/"]);
        // TLS: https:// addresses with the CA that signed the workers' certificates.
        let tls = load(
            "[engine]\nworkers = [\"https://w1.internal:7470\"]\nworker_ca = \"certs/ca.pem\"\n",
            &none,
        )
        .unwrap();
        assert_eq!(tls.worker_ca, Some(PathBuf::from("/proj/certs/ca.pem")));
        // Workers alone mean distributed; the flag's list wins over the file's.
        let mut over = Overrides::default();
        over.engine.workers = Some(vec!["http://127.0.0.1:9001".into()]);
        let c = cluster("", &over).unwrap().unwrap();
        assert_eq!(c.workers[0].as_str(), "http://127.0.0.1:9001/");
        for (text, key, says) in [
            (
                "[engine]\nkind = \"distributed\"\n",
                "engine.workers",
                "at least one worker",
            ),
            (
                "[engine]\nkind = \"cluster\"\n",
                "engine.kind",
                "expected \"local\" or \"distributed\"",
            ),
            (
                "[engine]\nkind = \"local\"\nworkers = [\"http://a:1\"]\n",
                "engine.workers",
                "kind is \"local\"",
            ),
            (
                "[engine]\nworkers = [\"10.0.0.7:7470\"]\n",
                "engine.workers",
                "expected http://HOST:PORT",
            ),
            (
                "[engine]\nworkers = [\"http://10.0.0.7\"]\n",
                "engine.workers",
                "expected http://HOST:PORT",
            ),
            (
                "[engine]\nworkers = [\"http://u:secret@h:1\"]\n",
                "engine.workers",
                "not a worker address",
            ),
        ] {
            let e = cluster(text, &none).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn memory_limit_is_a_size_a_share_or_none() {
        // Absent: 75% of this machine's memory; `none` lifts it.
        let project = load("", &Overrides::default()).unwrap();
        assert_eq!(
            project.memory_limit,
            physical_memory().map(|p| (p as f64 * 0.75) as usize)
        );
        let project = load("[engine]\nmemory_limit = \"none\"\n", &Overrides::default()).unwrap();
        assert_eq!(project.memory_limit, None);
        let project = load("[engine]\nmemory_limit = \"4GiB\"\n", &Overrides::default()).unwrap();
        assert_eq!(project.memory_limit, Some(4 << 30));
    }

    fn load(text: &str, over: &Overrides) -> Result<Project> {
        let raw: RawProject =
            toml::from_str(text).map_err(|e| Error::toml(Path::new("retention.toml"), text, e))?;
        Project::from_raw(
            Path::new("/proj"),
            Path::new("/proj/retention.toml"),
            raw,
            over,
        )
    }

    #[test]
    fn defaults_are_local_lake() {
        let p = load("", &Overrides::default()).unwrap();
        assert_eq!(p.raw.as_str(), "file:///proj/lake/raw/");
        assert_eq!(p.curated.as_str(), "file:///proj/lake/curated/");
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(p.jobs, default_jobs(cores));
        assert_eq!(
            [1, 2, 3, 4, 64].map(default_jobs),
            [1, 1, 1, 2, 2],
            "one job at a time below 4 cores"
        );
        assert_eq!(p.log_retention_days, 30);
        assert_eq!(
            p.params,
            vec![(
                "reporting_currency".to_string(),
                ScalarValue::Utf8(Some("USD".into()))
            )]
        );
    }

    #[test]
    fn overrides_win_over_file() {
        let mut over = Overrides::default();
        over.storage.raw = Some("s3://bucket/raw".into());
        over.engine.jobs = Some(5);
        let p = load(
            "[storage]\nraw = \"memory:///x\"\n[engine]\njobs = 3\n",
            &over,
        )
        .unwrap();
        assert_eq!(p.raw.as_str(), "s3://bucket/raw/");
        assert_eq!(p.jobs, 5);
    }

    #[test]
    fn bad_values_all_reported() {
        let err = load(
            "[storage]\nraw = \"ftp://x/y\"\ncurated = \"\"\n[engine]\nmemory_limit = \"4 parsecs\"\n[datafusion]\n\"execution.no_such_key\" = 1\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("4 problem(s)"), "{err}");
        assert!(
            err.contains("storage.raw: `ftp://x/y`: unsupported scheme `ftp`"),
            "{err}"
        );
        assert!(err.contains("storage.curated: missing value"), "{err}");
        assert!(err.contains("engine.memory_limit"), "{err}");
        assert!(err.contains("datafusion.execution.no_such_key"), "{err}");
    }

    #[test]
    fn report_schedule_is_checked_at_load() {
        let p = load(
            "[report]\nschedule = \"0 0 8 * * Mon\"\ntimezone = \"Europe/Berlin\"\n",
            &Overrides::default(),
        )
        .unwrap();
        let r = p.report.unwrap();
        assert_eq!(r.expr, "0 0 8 * * Mon");
        assert_eq!(r.timezone, chrono_tz::Europe::Berlin);
        assert!(load("", &Overrides::default()).unwrap().report.is_none());
        let err = load(
            "[report]\nschedule = \"every monday\"\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("report.schedule: `every monday` is not a valid schedule"),
            "{err}"
        );
        let err = load(
            "[report]\nschedule = \"0 0 8 * * Mon\"\ntimezone = \"Mars/Olympus\"\n",
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("report.timezone: `Mars/Olympus` is not an IANA time zone"),
            "{err}"
        );
        assert!(load("[report]\ncron = \"x\"\n", &Overrides::default()).is_err());
    }

    #[test]
    fn project_params() {
        let p = load(
            "[params]\nreporting_currency = \"EUR\"\ntolerance_pct = 2\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            p.params,
            vec![
                (
                    "reporting_currency".to_string(),
                    ScalarValue::Utf8(Some("EUR".into()))
                ),
                ("tolerance_pct".to_string(), ScalarValue::Int64(Some(2))),
            ]
        );
        assert!(load("[params]\nx = [1]\n", &Overrides::default()).is_err());
        let e = load("[params]\nas_of = \"latest\"\n", &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("params.as_of: `$as_of` is the run's as-of day"),
            "{e}"
        );
    }

    #[test]
    fn latest_day_comes_from_as_of_or_the_raw_orders() {
        let p = load("", &Overrides::default()).unwrap();
        assert_eq!(
            p.latest_day,
            LatestDay {
                table: "orders".into(),
                column: "order_ts".into()
            }
        );
        let p = load(
            "[as_of]\nlatest_table = \"sales\"\nlatest_column = \"placed_at\"\n",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            (p.latest_day.table.as_str(), p.latest_day.column.as_str()),
            ("sales", "placed_at")
        );
    }

    #[test]
    fn unknown_key_names_line() {
        let err = load("[storage]\nraww = \"x\"\n", &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("retention.toml:2:1: unknown field `raww`"),
            "{err}"
        );
    }
}
