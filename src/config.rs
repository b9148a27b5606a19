//! The project file `retention.toml`: raw form as written, overrides from env and flags, validated `Project`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::error::{Error, Result};

/// Name of the project file at the project's root.
pub const PROJECT_FILE: &str = "retention.toml";

/// `retention.toml` as written. Every key is optional; defaults suit a laptop.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    /// Where raw and curated data live.
    #[serde(default)]
    pub storage: RawStorage,
    /// Engine resources.
    #[serde(default)]
    pub engine: RawEngine,
    /// Curated-table history kept for time travel.
    #[serde(default)]
    pub history: RawHistory,
    /// DataFusion settings passed through `ConfigOptions::set` (unknown keys fail).
    #[serde(default)]
    pub datafusion: BTreeMap<String, toml::Value>,
    /// Parameters every job gets (a job's own `[params]` win), e.g. `reporting_currency`.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
}

/// `[storage]`: object-store URLs (`file://`, `s3://`, `gs://`, `az://`, `memory://`) or local paths.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// Root of the raw (landing) tables. Default `./lake/raw`.
    pub raw: Option<String>,
    /// Root of the curated Delta tables. Default `./lake/curated`.
    pub curated: Option<String>,
}

/// `[engine]`: memory and parallelism.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    /// Memory limit for query execution: a size (`"4GiB"`, `"512MiB"`), a share of physical
    /// memory (`"60%"`), or `"none"`. Default: 75% of physical memory.
    pub memory_limit: Option<String>,
    /// DataFusion target partitions. Default: number of cores.
    pub target_partitions: Option<usize>,
    /// Jobs run at once by `retention run`. Default 2.
    pub jobs: Option<usize>,
}

/// `[history]`: how long old curated versions stay readable.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHistory {
    /// Days of Delta log kept (time travel horizon). Default 30.
    pub log_retention_days: Option<u32>,
    /// Hours a replaced data file is kept before `retention vacuum` may delete it. Default 168.
    pub deleted_file_retention_hours: Option<u32>,
}

/// Overrides from flags or environment variables (flags win over env, both over the file).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub raw: Option<String>,
    pub curated: Option<String>,
    pub memory_limit: Option<String>,
    pub target_partitions: Option<usize>,
    pub jobs: Option<usize>,
    pub log_retention_days: Option<u32>,
    pub deleted_file_retention_hours: Option<u32>,
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
    /// Memory limit in bytes, if any.
    pub memory_limit: Option<usize>,
    pub target_partitions: Option<usize>,
    /// Concurrent jobs.
    pub jobs: usize,
    pub log_retention_days: u32,
    pub deleted_file_retention_hours: u32,
    /// DataFusion `key = value` settings, in file order.
    pub datafusion: Vec<(String, String)>,
    /// Project-wide job parameters (`[params]`): name and value.
    pub params: Vec<(String, datafusion::common::ScalarValue)>,
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
        let mut problems = Vec::new();
        let mut location = |key: &str, over: &Option<String>, file: &Option<String>, default| {
            let text = over
                .clone()
                .or_else(|| file.clone())
                .unwrap_or_else(|| String::from(default));
            parse_location(&root, &text)
                .map_err(|message| Error::Config {
                    path: path.to_path_buf(),
                    key: key.into(),
                    message,
                })
                .map_err(|e| problems.push(e))
                .ok()
        };
        let raw_url = location(
            "storage.raw",
            &overrides.raw,
            &raw.storage.raw,
            "./lake/raw",
        );
        let curated_url = location(
            "storage.curated",
            &overrides.curated,
            &raw.storage.curated,
            "./lake/curated",
        );

        let memory_limit = match overrides
            .memory_limit
            .as_deref()
            .or(raw.engine.memory_limit.as_deref())
            .unwrap_or(DEFAULT_MEMORY_LIMIT)
        {
            t if t.trim().eq_ignore_ascii_case("none") => None,
            text => match parse_memory_limit(text, physical_memory()) {
                Ok(n) => n,
                Err(message) => {
                    problems.push(Error::Config {
                        path: path.to_path_buf(),
                        key: "engine.memory_limit".into(),
                        message,
                    });
                    None
                }
            },
        };
        let target_partitions = overrides.target_partitions.or(raw.engine.target_partitions);
        if target_partitions == Some(0) {
            problems.push(Error::Config {
                path: path.to_path_buf(),
                key: "engine.target_partitions".into(),
                message: "must be at least 1".into(),
            });
        }
        let jobs = overrides.jobs.or(raw.engine.jobs).unwrap_or(2);
        if jobs == 0 {
            problems.push(Error::Config {
                path: path.to_path_buf(),
                key: "engine.jobs".into(),
                message: "must be at least 1".into(),
            });
        }

        let mut datafusion = Vec::new();
        for (key, value) in raw.datafusion {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    problems.push(Error::Config {
                        path: path.to_path_buf(),
                        key: format!("datafusion.{key}"),
                        message: format!(
                            "expected a string, number or boolean, found {}",
                            other.type_str()
                        ),
                    });
                    continue;
                }
            };
            let full = if key.starts_with("datafusion.") {
                key
            } else {
                format!("datafusion.{key}")
            };
            // Check the key now so a typo fails at load, not mid-run.
            let mut probe = datafusion::config::ConfigOptions::new();
            if let Err(e) = probe.set(&full, &text) {
                problems.push(Error::Config {
                    path: path.to_path_buf(),
                    key: full.clone(),
                    message: e.to_string(),
                });
            }
            datafusion.push((full, text));
        }

        let mut params = Vec::new();
        // Finance reports in USD unless the project says otherwise.
        if !raw.params.contains_key("reporting_currency") {
            params.push((
                "reporting_currency".to_string(),
                datafusion::common::ScalarValue::Utf8(Some("USD".into())),
            ));
        }
        for (k, v) in &raw.params {
            match crate::spec::param_value(v) {
                Ok(value) => params.push((k.clone(), value)),
                Err(message) => problems.push(Error::Config {
                    path: path.to_path_buf(),
                    key: format!("params.{k}"),
                    message,
                }),
            }
        }
        Error::from_many(problems)?;
        Ok(Project {
            params,
            root,
            raw: raw_url.expect("checked"),
            curated: curated_url.expect("checked"),
            memory_limit,
            target_partitions,
            jobs,
            log_retention_days: overrides
                .log_retention_days
                .or(raw.history.log_retention_days)
                .unwrap_or(30),
            deleted_file_retention_hours: overrides
                .deleted_file_retention_hours
                .or(raw.history.deleted_file_retention_hours)
                .unwrap_or(168),
            datafusion,
        })
    }

    /// Directory of job specs.
    pub fn jobs_dir(&self) -> PathBuf {
        self.root.join("jobs")
    }
}

/// Schemes `retention` knows how to reach.
pub const SCHEMES: [&str; 7] = ["file", "memory", "s3", "s3a", "gs", "az", "abfss"];

/// Parse a storage location: a URL with a known scheme, or a local path (relative to `root`).
/// The result always ends in `/` so table names join under it.
pub fn parse_location(root: &Path, text: &str) -> std::result::Result<Url, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("missing value: expected a URL (file://, s3://, gs://, az://, memory://) or a local path".into());
    }
    let mut url = if text.contains("://") {
        let url = Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
        if !SCHEMES.contains(&url.scheme()) {
            return Err(format!(
                "`{text}`: unsupported scheme `{}`; expected one of {}",
                url.scheme(),
                SCHEMES.join(", ")
            ));
        }
        if matches!(url.scheme(), "s3" | "s3a" | "gs" | "az" | "abfss")
            && url.host_str().unwrap_or("").is_empty()
        {
            return Err(format!("`{text}`: a bucket or container name is required"));
        }
        url
    } else {
        let path = root.join(text);
        let path = std::path::absolute(&path).map_err(|e| format!("`{text}`: {e}"))?;
        let path = normalize(&path);
        Url::from_directory_path(&path)
            .map_err(|_| format!("`{text}` is not a usable local path"))?
    };
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// Remove `.` and `..` components without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Parse `"4GiB"`, `"512MiB"`, `"1000000"` into bytes.
/// The memory limit when none is configured: a share of physical memory, so a run that outgrows
/// the machine fails with DataFusion's "resources exhausted" (or spills) instead of being killed
/// by the OS.
pub const DEFAULT_MEMORY_LIMIT: &str = "75%";

/// Physical memory in bytes (Linux `/proc/meminfo`), if known.
pub fn physical_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A memory limit: a size (`4GiB`) or a share of physical memory (`75%`). A share on a system
/// whose memory is unknown means no limit.
pub fn parse_memory_limit(
    text: &str,
    physical: Option<usize>,
) -> std::result::Result<Option<usize>, String> {
    match text.trim().strip_suffix('%') {
        Some(pct) => {
            let pct: f64 = pct
                .trim()
                .parse()
                .ok()
                .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
                .ok_or_else(|| format!("`{text}`: expected a share like 75% (1-100)"))?;
            Ok(physical.map(|p| (p as f64 * pct / 100.0) as usize))
        }
        None => parse_bytes(text).map(Some),
    }
}

pub fn parse_bytes(text: &str) -> std::result::Result<usize, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("`{text}`: expected a size like 4GiB, 512MiB or 1000000"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0_f64.powi(4),
        other => {
            return Err(format!(
                "`{text}`: unknown size unit `{other}` (use B, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    Ok((num * mult) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limit_is_a_size_a_share_or_none() {
        let gib = 1024 * 1024 * 1024;
        assert_eq!(
            parse_memory_limit("4GiB", Some(16 * gib)),
            Ok(Some(4 * gib))
        );
        assert_eq!(
            parse_memory_limit("75%", Some(16 * gib)),
            Ok(Some(12 * gib))
        );
        assert_eq!(parse_memory_limit("75%", None), Ok(None));
        assert!(
            parse_memory_limit("0%", Some(gib))
                .unwrap_err()
                .contains("expected a share")
        );
        assert!(parse_memory_limit("150%", Some(gib)).is_err());
        // Absent: 75% of this machine's memory; `none` lifts it.
        let project = load("", &Overrides::default()).unwrap();
        assert_eq!(
            project.memory_limit,
            physical_memory().map(|p| (p as f64 * 0.75) as usize)
        );
        let project = load("[engine]\nmemory_limit = \"none\"\n", &Overrides::default()).unwrap();
        assert_eq!(project.memory_limit, None);
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
        assert_eq!(p.jobs, 2);
        assert_eq!(p.log_retention_days, 30);
        assert_eq!(
            p.params,
            vec![(
                "reporting_currency".to_string(),
                datafusion::common::ScalarValue::Utf8(Some("USD".into()))
            )]
        );
    }

    #[test]
    fn overrides_win_over_file() {
        let over = Overrides {
            raw: Some("s3://bucket/raw".into()),
            jobs: Some(5),
            ..Default::default()
        };
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
                    datafusion::common::ScalarValue::Utf8(Some("EUR".into()))
                ),
                (
                    "tolerance_pct".to_string(),
                    datafusion::common::ScalarValue::Int64(Some(2))
                ),
            ]
        );
        assert!(load("[params]\nx = [1]\n", &Overrides::default()).is_err());
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

    #[test]
    fn bucket_required() {
        let err = parse_location(Path::new("/"), "s3:///nobucket").unwrap_err();
        assert!(err.contains("bucket"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("lots").is_err());
    }
}
