//! Validated values parsed once from raw input (flags, project files, SQL tests): months,
//! selectors, parameter assignments, sizes and memory limits, the run's as-of day and trigger.
//! Everything after parsing trusts them.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// A calendar month, `YYYY-MM` (01-12).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month(String);

impl Month {
    /// Parse `YYYY-MM`; the error names the `--month` flag.
    pub fn parse(text: &str) -> Result<Month> {
        Self::check(text).map_err(|message| Error::Argument {
            flag: "--month",
            key: "month".into(),
            message,
        })
    }

    /// Parse `YYYY-MM`, with the bare message on failure (for clap).
    pub fn check(text: &str) -> std::result::Result<Month, String> {
        let ok =
            text.len() == 7 && NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d").is_ok();
        if ok {
            Ok(Month(text.to_string()))
        } else {
            Err(format!(
                "`{text}` is not a month: expected YYYY-MM with a month from 01 to 12"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Month {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Month::check(s)
    }
}

/// Which jobs a selector picks: `NAME`, `+NAME` (with upstream), `NAME+` (with downstream),
/// `+NAME+`, `tag:TAG`, or `state:modified` (`state:modified+` with downstream): the jobs whose
/// spec or SQL changed since their last successful run, or that never succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Job {
        name: String,
        upstream: bool,
        downstream: bool,
    },
    Tag(String),
    Modified {
        downstream: bool,
    },
}

impl Selector {
    /// A job alone.
    pub fn job(name: &str) -> Selector {
        Selector::Job {
            name: name.to_string(),
            upstream: false,
            downstream: false,
        }
    }

    /// A job with everything downstream of it.
    pub fn with_downstream(name: &str) -> Selector {
        Selector::Job {
            name: name.to_string(),
            upstream: false,
            downstream: true,
        }
    }

    /// A job with everything upstream of it.
    pub fn with_upstream(name: &str) -> Selector {
        Selector::Job {
            name: name.to_string(),
            upstream: true,
            downstream: false,
        }
    }
}

impl FromStr for Selector {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if let Some(tag) = s.strip_prefix("tag:") {
            return Ok(Selector::Tag(tag.to_string()));
        }
        if let Some(state) = s.strip_prefix("state:") {
            return match state {
                "modified" => Ok(Selector::Modified { downstream: false }),
                "modified+" => Ok(Selector::Modified { downstream: true }),
                _ => Err(format!(
                    "`{s}`: the state selectors are state:modified and state:modified+"
                )),
            };
        }
        let upstream = s.starts_with('+');
        let downstream = s.ends_with('+') && s.len() > 1;
        let name = s.trim_start_matches('+').trim_end_matches('+');
        if name.is_empty() {
            return Err(format!("`{s}`: expected NAME, +NAME, NAME+ or tag:TAG"));
        }
        Ok(Selector::Job {
            name: name.to_string(),
            upstream,
            downstream,
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Tag(t) => write!(f, "tag:{t}"),
            Selector::Modified { downstream } => {
                write!(f, "state:modified{}", if *downstream { "+" } else { "" })
            }
            Selector::Job {
                name,
                upstream,
                downstream,
            } => write!(
                f,
                "{}{name}{}",
                if *upstream { "+" } else { "" },
                if *downstream { "+" } else { "" }
            ),
        }
    }
}

/// `--param NAME=VALUE`: the value is typed later, by the parameter's declared default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamAssignment {
    pub name: String,
    pub value: String,
}

impl FromStr for ParamAssignment {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => Ok(ParamAssignment {
                name: name.trim().to_string(),
                value: value.to_string(),
            }),
            _ => Err(format!("`{s}`: expected NAME=VALUE")),
        }
    }
}

/// A size in bytes: `4GiB`, `512 MiB`, `1000`, `2GB` (K/M/G are powers of 1000, Ki/Mi/Gi of 1024).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    parse_size::parse_size(text.trim())
        .map_err(|e| format!("`{text}`: expected a size like 4GiB, 512MiB or 1000000 ({e})"))
}

/// `engine.memory_limit`: a size, a share of physical memory, or none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    Bytes(u64),
    /// Percent of physical memory, 0 < p <= 100.
    Share(f64),
    None,
}

impl FromStr for MemoryLimit {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("none") {
            return Ok(MemoryLimit::None);
        }
        match t.strip_suffix('%') {
            Some(pct) => pct
                .trim()
                .parse()
                .ok()
                .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
                .map(MemoryLimit::Share)
                .ok_or_else(|| format!("`{text}`: expected a share like 75% (1-100)")),
            None => parse_size(t).map(MemoryLimit::Bytes),
        }
    }
}

impl MemoryLimit {
    /// Bytes for the engine's pool, given the machine's physical memory (`None` if unknown: a
    /// share then means no limit, with a warning from the caller).
    pub fn bytes(self, physical: Option<u64>) -> Option<usize> {
        match self {
            MemoryLimit::Bytes(b) => Some(b as usize),
            MemoryLimit::Share(pct) => physical.map(|p| (p as f64 * pct / 100.0) as usize),
            MemoryLimit::None => None,
        }
    }
}

/// `storage.read_cache`: how much memory keeps small Parquet files for later reads of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCacheSize {
    /// On for a cloud store or a local disk (`AUTO_READ_CACHE` bytes, at most a sixteenth of the
    /// memory limit), off when every root is in memory.
    Auto,
    Off,
    Bytes(u64),
}

/// The read cache's size when `auto` turns it on.
pub const AUTO_READ_CACHE: u64 = 256 << 20;

impl FromStr for ReadCacheSize {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ReadCacheSize::Auto),
            "off" | "none" | "0" => Ok(ReadCacheSize::Off),
            _ => parse_size(text)
                .map(ReadCacheSize::Bytes)
                .map_err(|e| format!("{e}, or auto, or off")),
        }
    }
}

impl ReadCacheSize {
    /// The cache's bytes, if on. `auto` is off when `in_memory` (every root is an in-memory
    /// store: nothing to save) and otherwise `AUTO_READ_CACHE`, or a sixteenth of
    /// `memory_limit` when that is less: the cache lives outside the query pool.
    ///
    /// A local disk gains too: one read of a whole small file instead of a footer read and a
    /// range read per scan, each opening the file (at 10M orders `run --all` took 110.6 s
    /// instead of 120.1 s).
    pub fn bytes(self, in_memory: bool, memory_limit: Option<usize>) -> Option<u64> {
        match self {
            ReadCacheSize::Auto if in_memory => None,
            ReadCacheSize::Auto => Some(
                memory_limit
                    .map(|limit| AUTO_READ_CACHE.min(limit as u64 / 16))
                    .unwrap_or(AUTO_READ_CACHE),
            ),
            ReadCacheSize::Off => None,
            ReadCacheSize::Bytes(b) => Some(b),
        }
    }
}

/// The machine's physical memory in bytes, if the OS tells (Linux, macOS, Windows, BSDs).
pub fn physical_memory() -> Option<u64> {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    Some(system.total_memory()).filter(|m| *m > 0)
}

/// The day a run is "as of": what `$as_of` is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The latest order day in the data, resolved once per run by the engine.
    Latest,
    /// The clock's day (UTC).
    Today,
    /// A given day (backfills).
    Day(NaiveDate),
}

impl FromStr for AsOf {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim() {
            "latest" => Ok(AsOf::Latest),
            "today" => Ok(AsOf::Today),
            d => NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map(AsOf::Day)
                .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD), `latest` or `today`")),
        }
    }
}

impl fmt::Display for AsOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsOf::Latest => f.write_str("latest"),
            AsOf::Today => f.write_str("today"),
            AsOf::Day(d) => write!(f, "{d}"),
        }
    }
}

/// What started a run, as recorded in `_runs.trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Manual,
    Schedule,
    Demo,
    /// The run that brings the finance jobs up to date before a close.
    CloseMonth,
    /// The run that recomputes a re-opened month.
    ReopenMonth,
    /// The close itself (its commit row in `_runs`).
    Close,
    /// The re-open itself.
    Reopen,
    /// One interval of `retention backfill`.
    Backfill,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Schedule => "schedule",
            Trigger::Demo => "demo",
            Trigger::CloseMonth => "close-month",
            Trigger::ReopenMonth => "reopen-month",
            Trigger::Close => "close",
            Trigger::Reopen => "reopen",
            Trigger::Backfill => "backfill",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_must_be_real() {
        assert_eq!(Month::parse("2026-10").unwrap().as_str(), "2026-10");
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-10",
            "2026-10-01",
            "october",
        ] {
            let e = Month::parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not a month"), "{bad}: {e}");
        }
        assert_eq!(
            Month::parse("2026-13").unwrap_err().to_string(),
            "--month: month: `2026-13` is not a month: expected YYYY-MM with a month from 01 to 12"
        );
    }

    #[test]
    fn selectors_round_trip() {
        assert!("state:new".parse::<Selector>().is_err());
        for s in [
            "a",
            "+a",
            "a+",
            "+a+",
            "tag:x",
            "state:modified",
            "state:modified+",
        ] {
            assert_eq!(s.parse::<Selector>().unwrap().to_string(), s);
        }
        assert_eq!(
            "+a".parse::<Selector>().unwrap(),
            Selector::with_upstream("a")
        );
        assert!("+".parse::<Selector>().is_err());
    }

    #[test]
    fn params_need_a_name_and_equals() {
        assert_eq!(
            "from_day=2026-01-01".parse::<ParamAssignment>().unwrap(),
            ParamAssignment {
                name: "from_day".into(),
                value: "2026-01-01".into()
            }
        );
        assert!("from_day".parse::<ParamAssignment>().is_err());
        assert!("=1".parse::<ParamAssignment>().is_err());
    }

    #[test]
    fn sizes_are_exact_and_decimal_prefixes_are_decimal() {
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("2k").unwrap(), 2000);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        // No f64 rounding: 1.1 GiB is the exact byte count.
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn memory_limit_is_a_size_a_share_or_none() {
        let gib: u64 = 1 << 30;
        let parse = |t: &str| t.parse::<MemoryLimit>();
        assert_eq!(parse("4GiB").unwrap().bytes(Some(16 * gib)), Some(4 << 30));
        assert_eq!(parse("75%").unwrap().bytes(Some(16 * gib)), Some(12 << 30));
        assert_eq!(parse("75%").unwrap().bytes(None), None);
        assert_eq!(parse("none").unwrap(), MemoryLimit::None);
        assert!(parse("0%").unwrap_err().contains("expected a share"));
        assert!(parse("150%").is_err());
        assert!(physical_memory().is_some_and(|m| m > 1 << 20));
    }

    #[test]
    fn as_of_days() {
        assert_eq!("latest".parse::<AsOf>().unwrap(), AsOf::Latest);
        assert_eq!("today".parse::<AsOf>().unwrap(), AsOf::Today);
        assert_eq!(
            "2026-10-31".parse::<AsOf>().unwrap(),
            AsOf::Day(NaiveDate::from_ymd_opt(2026, 10, 31).unwrap())
        );
        assert!("2026-13-01".parse::<AsOf>().is_err());
    }
}
