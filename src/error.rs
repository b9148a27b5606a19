//! The crate's one error type: every variant names the file, job, table or column it is about.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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

    /// A TOML file did not parse or did not match its schema.
    #[error("{path}:{line}:{column}: {message}")]
    Toml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A value in a configuration or spec file is not valid.
    #[error("{path}: {key}: {message}")]
    Config {
        path: PathBuf,
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

    /// A source's files do not match its contract.
    #[error("source `{table}`: {message}")]
    Contract { table: String, message: String },

    /// An object store URL or backend problem, with credentials stripped.
    #[error("storage `{location}`: {message}")]
    Storage { location: String, message: String },

    /// A job failed while running or publishing.
    #[error("job `{job}`: {message}")]
    Job { job: String, message: String },

    /// A publish to a curated Delta table failed; the previous version is unchanged.
    #[error("table `{table}` at {location}: publish failed, previous version kept: {message}")]
    Publish {
        table: String,
        location: String,
        message: String,
    },

    /// Some jobs of a run failed.
    #[error("{failed} of {total} job(s) failed")]
    RunFailed { failed: usize, total: usize },

    /// Several problems found at once (by `validate` and `run`'s planning step).
    #[error("{} problem(s):\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Many(Vec<Error>),

    /// DataFusion failed outside any job (e.g. an ad-hoc query).
    #[error("{0}")]
    DataFusion(String),

    /// An export file could not be written; nothing was left under its name.
    #[error("{path}: cannot write the export: {message}")]
    Export { path: PathBuf, message: String },

    /// Delta Lake failed outside any job.
    #[error("delta: {0}")]
    Delta(String),
}

impl Error {
    /// Collapse a list of problems: none is `Ok`, one is itself, more is `Many`.
    pub fn from_many(mut errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Many(errors)),
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
        }
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::DataFusion(crate::storage::redact(&e.to_string()))
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        Error::DataFusion(e.to_string())
    }
}

impl From<deltalake::DeltaTableError> for Error {
    fn from(e: deltalake::DeltaTableError) -> Self {
        Error::Delta(crate::storage::redact(&e.to_string()))
    }
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
}
