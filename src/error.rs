//! The crate's one error type: every variant names the file, job, table or column it is about and
//! keeps the error that caused it as its `#[source]`. Nothing here is redacted: credentials are
//! stripped once, where text leaves the process (`crate::redact`).

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any underlying error kept as a cause (object store, Delta, Parquet, I/O, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in `retention`, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration or spec file could not be read.
    #[error("{path}: cannot read: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file or directory could not be written.
    #[error("{path}: cannot write: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A TOML file did not parse or did not match its schema.
    #[error("{path}:{line}:{column}: {message}")]
    Toml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        #[source]
        source: Box<toml::de::Error>,
    },

    /// A value in a configuration or spec file is not valid.
    #[error("{path}: {key}: {message}")]
    Config {
        path: PathBuf,
        key: String,
        message: String,
    },

    /// A command-line value is not valid (`--month`, `--param`, `--out`, ...).
    #[error("{flag}: {key}: {message}")]
    Argument {
        flag: &'static str,
        key: String,
        message: String,
    },

    /// A job's SQL does not parse or does not plan.
    #[error("{path}:{line}:{column}: job `{job}`: {message}")]
    Sql {
        job: String,
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// A job reads a table that is neither a source nor another job's output.
    #[error(
        "{path}: job `{job}` reads unknown table `{table}` (not a source in jobs/sources.toml and not a job's output)"
    )]
    UnknownTable {
        job: String,
        path: PathBuf,
        table: String,
    },

    /// Jobs depend on each other in a loop.
    #[error("cyclic dependency between jobs: {}", cycle.join(" -> "))]
    Cycle { cycle: Vec<String> },

    /// A selector on the command line names nothing.
    #[error("selector `{selector}` matches no job")]
    Selector { selector: String },

    /// A table that `export` cannot export.
    #[error("`{table}` cannot be exported: only {exportable} can")]
    NotExportable {
        table: String,
        exportable: &'static str,
    },

    /// A source's files do not match its contract.
    #[error("source `{table}`: {message}")]
    Contract {
        table: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// An object store URL or backend problem.
    #[error("storage `{location}`: {message}")]
    Storage {
        location: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// A job failed while running or publishing.
    #[error("job `{job}`: {message}")]
    Job { job: String, message: String },

    /// DataFusion failed while running a job.
    #[error("job `{job}`: {source}")]
    JobEngine {
        job: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// A data check does not plan.
    #[error("job `{job}`: check `{check}`: {source}")]
    Check {
        job: String,
        check: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// The run's as-of day could not be resolved for a job.
    #[error("job `{job}`: as-of day: {source}")]
    JobAsOf {
        job: String,
        #[source]
        source: Box<Error>,
    },

    /// A job's input source broke its contract.
    #[error("job `{job}`: input {source}")]
    JobInput {
        job: String,
        #[source]
        source: std::sync::Arc<Error>,
    },

    /// A publish to a curated Delta table failed; the previous version is unchanged.
    #[error("table `{table}` at {location}: publish failed, previous version kept: {message}")]
    Publish {
        table: String,
        location: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// A daemon lost its lease on a slot (expired, or taken over by a later token): it must not
    /// publish.
    #[error("job `{job}` slot {}: lease token {token} lost: {message}", slot.to_rfc3339())]
    LeaseLost {
        job: String,
        slot: chrono::DateTime<chrono::Utc>,
        token: u64,
        message: String,
    },

    /// A job's task panicked (a bug); the run stops and publishes nothing more.
    #[error("job task panicked: {source}")]
    TaskPanicked {
        #[source]
        source: tokio::task::JoinError,
    },

    /// Some jobs of a run failed.
    #[error("{failed} of {total} job(s) failed")]
    RunFailed { failed: usize, total: usize },

    /// A month close or re-open was refused or failed.
    #[error("close-month {month}: {message}")]
    Close {
        month: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// The scheduler could not start or stop.
    #[error("schedule: {message}")]
    Schedule {
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// A SQL endpoint (`serve-sql`) could not start or stopped.
    #[error("serve-sql {endpoint}: {message}")]
    SqlServer {
        endpoint: String,
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// A cluster worker (`retention worker`) could not start, or a worker token is not valid.
    #[error("worker: {message}")]
    Worker {
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// SQL unit test files failed.
    #[error("{failed} SQL test file(s) failed")]
    SqlTests { failed: usize },

    /// A statement `query` refuses without `--allow-write`.
    #[error("read-only: {message} (pass --allow-write to `retention query` to run it)")]
    ReadOnly { message: String },

    /// Several problems found at once (by `validate` and `run`'s planning step).
    #[error("{} problem(s):\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Many(Vec<Error>),

    /// DataFusion failed outside any job (e.g. an ad-hoc query).
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// Arrow failed outside any job (building or printing batches).
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// Parquet encoding failed (the generator's raw files).
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    /// An export file could not be written; nothing was left under its name.
    #[error("{path}: cannot write the export: {message}")]
    Export {
        path: PathBuf,
        message: String,
        #[source]
        source: Option<BoxError>,
    },

    /// Delta Lake failed outside any job.
    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
}

impl Error {
    /// Whether trying again could succeed: an object store 5xx, a timeout or a dropped
    /// connection, or a Delta commit that lost a race, anywhere in the chain of causes. SQL,
    /// contract, check and configuration problems are not, and neither is a lost lease.
    pub fn is_transient(&self) -> bool {
        if matches!(self, Error::LeaseLost { .. }) {
            return false;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if transient_cause(e) {
                return true;
            }
            cause = e.source();
        }
        false
    }

    /// Whether DataFusion ran out of its memory pool ("Resources exhausted") anywhere in the
    /// chain of causes.
    pub fn is_out_of_memory(&self) -> bool {
        use datafusion::error::DataFusionError;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(e) = e.downcast_ref::<DataFusionError>()
                && matches!(e.find_root(), DataFusionError::ResourcesExhausted(_))
            {
                return true;
            }
            cause = e.source();
        }
        false
    }

    /// Collapse a list of problems: none is `Ok`, one is itself, more is `Many`.
    pub fn from_many(mut errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Many(errors)),
        }
    }

    /// The problems inside `Many`, or this error alone.
    pub fn flatten(self) -> Vec<Error> {
        match self {
            Error::Many(v) => v,
            other => vec![other],
        }
    }

    /// Turn a `toml` parse error into one that names the file, line and column.
    pub fn toml(path: &std::path::Path, text: &str, err: toml::de::Error) -> Self {
        let (line, column) = err
            .span()
            .map(|span| line_col(text, span.start))
            .unwrap_or((0, 0));
        Error::Toml {
            path: path.to_path_buf(),
            line,
            column,
            message: err.message().to_string(),
            source: Box::new(err),
        }
    }

    /// A storage error at `location` caused by `source`.
    pub fn storage(location: impl ToString, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Error::Storage {
            location: location.to_string(),
            message: source.to_string(),
            source: Some(source),
        }
    }

    /// Exit code: 2 for problems in the project's files or the command line, 1 for failures
    /// while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Toml { .. }
            | Error::Config { .. }
            | Error::Argument { .. }
            | Error::Sql { .. }
            | Error::UnknownTable { .. }
            | Error::Cycle { .. }
            | Error::Selector { .. }
            | Error::NotExportable { .. }
            | Error::ReadOnly { .. } => 2,
            Error::Many(v) if v.iter().all(|e| e.exit_code() == 2) => 2,
            _ => 1,
        }
    }
}

/// One link of a cause chain that is transient by itself.
fn transient_cause(e: &(dyn std::error::Error + 'static)) -> bool {
    use deltalake::kernel::transaction::TransactionError;
    if let Some(d) = e.downcast_ref::<deltalake::DeltaTableError>() {
        return match d {
            deltalake::DeltaTableError::VersionAlreadyExists(_) => true,
            deltalake::DeltaTableError::Transaction { source } => matches!(
                source,
                TransactionError::VersionAlreadyExists(_)
                    | TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
            ),
            _ => false,
        };
    }
    if let Some(h) = e.downcast_ref::<object_store::client::HttpError>() {
        use object_store::client::HttpErrorKind as Kind;
        return matches!(
            h.kind(),
            Kind::Connect | Kind::Request | Kind::Timeout | Kind::Interrupted
        );
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind as Kind;
        return matches!(
            io.kind(),
            Kind::TimedOut | Kind::ConnectionReset | Kind::ConnectionAborted | Kind::Interrupted
        );
    }
    if let Some(status) = e.downcast_ref::<tonic::Status>() {
        use tonic::Code;
        return matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted
        );
    }
    // object_store's error after its own retries is private to it: read its status line. A
    // cluster worker that cannot be reached, or went away, reaches us as text through the
    // Delta writer that ran the query.
    let text = e.to_string();
    [
        "status code: 5",
        "status code: 429",
        "Error connecting to Distributed DataFusion worker",
        "The service is currently unavailable",
    ]
    .iter()
    .any(|s| text.contains(s))
}

/// 1-based line and column of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "ab\ncde\nf";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (2, 2));
        assert_eq!(line_col(text, 7), (3, 1));
    }

    #[test]
    fn many_collapses() {
        assert!(Error::from_many(vec![]).is_ok());
        let one = Error::from_many(vec![Error::Selector {
            selector: "x".into(),
        }])
        .unwrap_err();
        assert!(matches!(one, Error::Selector { .. }));
        let two = Error::from_many(vec![
            Error::Selector {
                selector: "x".into(),
            },
            Error::Selector {
                selector: "y".into(),
            },
        ])
        .unwrap_err();
        assert_eq!(
            two.to_string(),
            "2 problem(s):\n  - selector `x` matches no job\n  - selector `y` matches no job"
        );
    }

    #[test]
    fn transient_errors_are_told_from_deterministic_ones() {
        let unavailable = object_store::Error::Generic {
            store: "S3",
            source: "Error performing PUT in 1s - Server returned non-2xx status code: 503 Service Unavailable: ".into(),
        };
        assert!(Error::storage("s3://b/x", unavailable).is_transient());
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert!(Error::storage("s3://b/x", timeout).is_transient());
        let race = deltalake::DeltaTableError::Transaction {
            source: deltalake::kernel::transaction::TransactionError::MaxCommitAttempts(0),
        };
        let publish = Error::Publish {
            table: "t".into(),
            location: "memory:///t/".into(),
            message: race.to_string(),
            source: Some(Box::new(race)),
        };
        assert!(publish.is_transient());
        let denied = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        assert!(!Error::storage("s3://b/x", denied).is_transient());
        let sql = Error::JobEngine {
            job: "j".into(),
            source: datafusion::error::DataFusionError::Plan("no column x".into()),
        };
        assert!(!sql.is_transient());
        let lost = Error::LeaseLost {
            job: "j".into(),
            slot: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            token: 1,
            message: "503".into(),
        };
        assert!(!lost.is_transient());
        // A worker down is transient; a worker refusing the token is not.
        let worker_down = Error::Publish {
            table: "t".into(),
            location: "file:///t/".into(),
            message: "Execution error: Error connecting to Distributed DataFusion worker on 'http://10.0.0.7:7470/': transport error".into(),
            source: None,
        };
        assert!(worker_down.is_transient());
        let refused = tonic::Status::unauthenticated("this worker needs the token");
        assert!(!Error::storage("http://10.0.0.7:7470", refused).is_transient());
        // The same, as the job's query error the writer saw (execute/job.rs).
        let query = Error::JobEngine {
            job: "j".into(),
            source: datafusion::error::DataFusionError::Shared(std::sync::Arc::new(
                datafusion::error::DataFusionError::Execution(
                    "Error connecting to Distributed DataFusion worker on 'http://10.0.0.7:7470/': transport error".into(),
                ),
            )),
        };
        assert!(query.is_transient());
        let gone = tonic::Status::unavailable("connection reset");
        assert!(Error::storage("http://10.0.0.7:7470", gone).is_transient());
    }

    #[test]
    fn causes_are_kept() {
        use std::error::Error as _;
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::storage("s3://b/x", io);
        assert_eq!(e.to_string(), "storage `s3://b/x`: denied");
        assert_eq!(e.source().unwrap().to_string(), "denied");
        let df = datafusion::error::DataFusionError::Plan("bad".into());
        let e = Error::JobEngine {
            job: "j".into(),
            source: df,
        };
        assert!(e.source().is_some());
        assert_eq!(e.to_string(), "job `j`: Error during planning: bad");
    }
}
