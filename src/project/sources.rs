//! Source contracts (`jobs/sources.toml`): where each raw table lives, its format, Hive partition
//! columns and expected columns, and the Arrow schema they promise. Checking the files against a
//! contract is the engine's (`engine::contract`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use serde::Deserialize;
use url::Url;

use crate::error::{Error, Result};

/// File name of the source contracts inside `jobs/`.
pub const SOURCES_FILE: &str = "sources.toml";

/// `jobs/sources.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSources {
    /// One `[[source]]` block per raw table.
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
}

/// One raw table's contract.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    /// Table name used in SQL.
    name: String,
    /// Location relative to the raw root (`orders/`), or a full URL. Default: the name.
    location: Option<String>,
    /// `parquet` (default) or `csv`.
    #[serde(default)]
    format: SourceFormat,
    /// What the table holds, for docs.
    #[serde(default)]
    description: String,
    /// Hive partition columns (`dt=2026-01-01/`), read as strings.
    #[serde(default)]
    partition_columns: Vec<String>,
    /// Expected columns, in order.
    columns: Vec<RawColumn>,
    /// How old the newest row may be before the jobs reading this source warn or are skipped.
    freshness: Option<RawFreshness>,
}

/// `freshness = { column = "order_ts", warn_after = "26h", error_after = "50h" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreshness {
    /// A `timestamp`, `timestamptz` or `date` column (or a partition column holding
    /// `YYYY-MM-DD`) whose newest value is the data's age.
    column: String,
    /// Older than this: the run logs a warning and counts it.
    warn_after: Option<String>,
    /// Older than this: the jobs reading the source are skipped, with the reason in `_runs`.
    error_after: Option<String>,
}

/// A validated freshness rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    pub column: String,
    pub warn_after: Option<std::time::Duration>,
    pub error_after: Option<std::time::Duration>,
}

/// One expected column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: String,
    /// `boolean`, `int`, `bigint`, `double`, `string`, `date`, `timestamp`, `timestamptz`, `decimal(p,s)`, ...
    #[serde(rename = "type")]
    data_type: String,
    /// Whether nulls are allowed. Default true.
    #[serde(default = "yes")]
    nullable: bool,
}

fn yes() -> bool {
    true
}

/// File format of a source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    #[default]
    Parquet,
    Csv,
}

/// A validated source contract.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub description: String,
    /// Absolute location, ending in `/`.
    pub location: Url,
    pub format: SourceFormat,
    pub partition_columns: Vec<String>,
    pub columns: Vec<Column>,
    pub freshness: Option<Freshness>,
}

/// A contracted column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub declared: String,
    pub data_type: DataType,
    pub nullable: bool,
}

/// Load and validate `jobs/sources.toml` (absent means no sources).
pub fn load(jobs_dir: &Path, raw_root: &Url) -> Result<Vec<Source>> {
    let path = jobs_dir.join(SOURCES_FILE);
    if !path.exists() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadFile {
        path: path.clone(),
        source,
    })?;
    parse(&path, &text, raw_root)
}

/// Parse contract text; `path` is used in messages.
pub fn parse(path: &Path, text: &str, raw_root: &Url) -> Result<Vec<Source>> {
    let raw: RawSources = toml::from_str(text).map_err(|e| Error::toml(path, text, e))?;
    let mut out: Vec<Source> = Vec::new();
    let mut problems = Vec::new();
    let bad = |key: String, message: String| Error::Config {
        path: PathBuf::from(path),
        key,
        message,
    };
    for s in raw.sources {
        if !is_identifier(&s.name) {
            problems.push(bad(
                format!("source `{}`", s.name),
                "name must be lower_snake_case".into(),
            ));
            continue;
        }
        if out.iter().any(|o| o.name == s.name) {
            problems.push(bad(format!("source `{}`", s.name), "declared twice".into()));
            continue;
        }
        let loc_text = s.location.clone().unwrap_or_else(|| format!("{}/", s.name));
        let location = if loc_text.contains("://") {
            crate::project::location::parse_location(Path::new("/"), &loc_text)
        } else {
            raw_root
                .join(&if loc_text.ends_with('/') {
                    loc_text.clone()
                } else {
                    format!("{loc_text}/")
                })
                .map_err(|e| format!("`{loc_text}`: {e}"))
        };
        let location = match location {
            Ok(l) => l,
            Err(m) => {
                problems.push(bad(format!("source `{}`.location", s.name), m));
                continue;
            }
        };
        let mut columns = Vec::new();
        for c in &s.columns {
            match parse_type(&c.data_type) {
                Ok(data_type) => columns.push(Column {
                    name: c.name.clone(),
                    declared: c.data_type.clone(),
                    data_type,
                    nullable: c.nullable,
                }),
                Err(m) => problems.push(bad(format!("source `{}`.column `{}`", s.name, c.name), m)),
            }
        }
        for p in &s.partition_columns {
            if s.columns.iter().any(|c| &c.name == p) {
                problems.push(bad(
                    format!("source `{}`.partition_columns", s.name),
                    format!("`{p}` is a partition column; do not list it in columns too"),
                ));
            }
        }
        let freshness = match &s.freshness {
            None => None,
            Some(f) => match freshness(f, &columns, &s.partition_columns) {
                Ok(f) => Some(f),
                Err(m) => {
                    problems.push(bad(format!("source `{}`.freshness", s.name), m));
                    None
                }
            },
        };
        out.push(Source {
            name: s.name,
            description: s.description,
            location,
            format: s.format,
            partition_columns: s.partition_columns,
            columns,
            freshness,
        });
    }
    Error::from_many(problems)?;
    Ok(out)
}

/// A freshness rule checked against the source's columns.
fn freshness(
    raw: &RawFreshness,
    columns: &[Column],
    partition_columns: &[String],
) -> std::result::Result<Freshness, String> {
    let typed = columns.iter().find(|c| c.name == raw.column);
    match typed.map(|c| &c.data_type) {
        Some(DataType::Timestamp(..) | DataType::Date32) => {}
        Some(other) => {
            return Err(format!(
                "column `{}` is {other}: expected a timestamp, timestamptz or date column",
                raw.column
            ));
        }
        None if partition_columns.contains(&raw.column) => {}
        None => return Err(format!("`{}` is not a column of the source", raw.column)),
    }
    let duration = |key: &str, text: &Option<String>| match text {
        None => Ok(None),
        Some(t) => humantime::parse_duration(t)
            .map(Some)
            .map_err(|e| format!("{key} `{t}` is not a duration ({e}): expected e.g. \"26h\"")),
    };
    let warn_after = duration("warn_after", &raw.warn_after)?;
    let error_after = duration("error_after", &raw.error_after)?;
    match (warn_after, error_after) {
        (None, None) => Err("give warn_after, error_after or both".into()),
        (Some(w), Some(e)) if w >= e => Err("warn_after must be shorter than error_after".into()),
        _ => Ok(Freshness {
            column: raw.column.clone(),
            warn_after,
            error_after,
        }),
    }
}

/// `lower_snake_case` identifiers only, so names are the same in every SQL engine.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Parse a contract type name into an Arrow type.
pub fn parse_type(text: &str) -> std::result::Result<DataType, String> {
    let t = text.trim().to_ascii_lowercase().replace(' ', "");
    let ty = match t.as_str() {
        "boolean" | "bool" => DataType::Boolean,
        "tinyint" | "int8" => DataType::Int8,
        "smallint" | "int16" => DataType::Int16,
        "int" | "integer" | "int32" => DataType::Int32,
        "bigint" | "int64" | "long" => DataType::Int64,
        "float" | "real" | "float32" => DataType::Float32,
        "double" | "float64" => DataType::Float64,
        "string" | "varchar" | "text" | "utf8" => DataType::Utf8,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        d if d.starts_with("decimal(") && d.ends_with(')') => {
            let inner = &d[8..d.len() - 1];
            let (p, s) = inner
                .split_once(',')
                .ok_or_else(|| format!("`{text}`: expected decimal(precision,scale)"))?;
            let p: u8 = p.parse().map_err(|_| format!("`{text}`: bad precision"))?;
            let s: i8 = s.parse().map_err(|_| format!("`{text}`: bad scale"))?;
            if p == 0 || p > 38 || s < 0 || s as u8 > p {
                return Err(format!(
                    "`{text}`: precision must be 1..=38 and scale 0..=precision"
                ));
            }
            DataType::Decimal128(p, s)
        }
        _ => {
            return Err(format!(
                "unknown type `{text}`; expected boolean, tinyint, smallint, int, bigint, float, double, string, date, timestamp, timestamptz or decimal(p,s)"
            ));
        }
    };
    Ok(ty)
}

/// Does a file's type satisfy the declared type? Strings match any string encoding, timestamps any
/// unit (with or without a zone as declared), everything else exactly.
pub fn type_matches(declared: &DataType, found: &DataType) -> bool {
    match (declared, found) {
        (DataType::Utf8, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => true,
        (DataType::Timestamp(_, None), DataType::Timestamp(_, None)) => true,
        (DataType::Timestamp(_, Some(_)), DataType::Timestamp(_, Some(z))) => {
            matches!(z.as_ref(), "UTC" | "+00:00" | "Z" | "Etc/UTC")
        }
        (d, DataType::Dictionary(_, v)) => type_matches(d, v),
        (d, f) => d == f,
    }
}

impl Source {
    /// Arrow schema the contract promises (data columns then partition columns).
    pub fn contract_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable))
            .collect();
        for p in &self.partition_columns {
            fields.push(Field::new(p, DataType::Utf8, false));
        }
        Arc::new(Schema::new(fields))
    }

    /// A provider with the contract's schema and no rows: lets `validate` plan without data.
    pub fn schema_only(&self) -> Arc<dyn TableProvider> {
        Arc::new(EmptyTable::new(self.contract_schema()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Url {
        Url::parse("memory:///raw/").unwrap()
    }

    #[test]
    fn parses_contract() {
        let text = r#"
[[source]]
name = "orders"
partition_columns = ["dt"]
columns = [
  { name = "order_id", type = "bigint", nullable = false },
  { name = "gmv", type = "decimal(18,2)" },
]
[[source]]
name = "fx"
location = "s3://bucket/fx"
format = "csv"
columns = [{ name = "rate", type = "decimal(18, 8)" }]
"#;
        let s = parse(Path::new("jobs/sources.toml"), text, &root()).unwrap();
        assert_eq!(s[0].location.as_str(), "memory:///raw/orders/");
        assert_eq!(s[0].columns[1].data_type, DataType::Decimal128(18, 2));
        assert!(!s[0].columns[0].nullable);
        assert_eq!(s[1].location.as_str(), "s3://bucket/fx/");
        assert_eq!(s[1].format, SourceFormat::Csv);
        assert_eq!(s[0].contract_schema().fields().len(), 3);
    }

    #[test]
    fn bad_types_and_duplicates() {
        let text = r#"
[[source]]
name = "a"
columns = [{ name = "x", type = "money" }, { name = "y", type = "decimal(40,2)" }]
[[source]]
name = "a"
columns = []
"#;
        let e = parse(Path::new("jobs/sources.toml"), text, &root())
            .unwrap_err()
            .to_string();
        assert!(e.contains("column `x`: unknown type `money`"), "{e}");
        assert!(e.contains("decimal(40,2)"), "{e}");
        assert!(e.contains("declared twice"), "{e}");
    }

    #[test]
    fn freshness_rules_are_checked_against_the_columns() {
        let text = r#"
[[source]]
name = "orders"
partition_columns = ["dt"]
columns = [{ name = "order_ts", type = "timestamptz" }, { name = "gmv", type = "decimal(18,2)" }]
freshness = { column = "order_ts", warn_after = "26h", error_after = "2days" }
[[source]]
name = "tickets"
partition_columns = ["dt"]
columns = []
freshness = { column = "dt", error_after = "3d" }
"#;
        let s = parse(Path::new("jobs/sources.toml"), text, &root()).unwrap();
        let hours = |h: u64| Some(std::time::Duration::from_secs(h * 3600));
        assert_eq!(
            s[0].freshness,
            Some(Freshness {
                column: "order_ts".into(),
                warn_after: hours(26),
                error_after: hours(48),
            })
        );
        assert_eq!(s[1].freshness.as_ref().unwrap().error_after, hours(72));
        for (rule, expected) in [
            (
                r#"{ column = "gmv", warn_after = "1h" }"#,
                "column `gmv` is Decimal128(18, 2): expected a timestamp, timestamptz or date column",
            ),
            (
                r#"{ column = "nope", warn_after = "1h" }"#,
                "`nope` is not a column of the source",
            ),
            (
                r#"{ column = "order_ts" }"#,
                "give warn_after, error_after or both",
            ),
            (
                r#"{ column = "order_ts", warn_after = "soon" }"#,
                "warn_after `soon` is not a duration",
            ),
            (
                r#"{ column = "order_ts", warn_after = "2d", error_after = "1d" }"#,
                "warn_after must be shorter than error_after",
            ),
        ] {
            let text = format!(
                "[[source]]\nname = \"orders\"\ncolumns = [{{ name = \"order_ts\", type = \"timestamptz\" }}, {{ name = \"gmv\", type = \"decimal(18,2)\" }}]\nfreshness = {rule}\n"
            );
            let e = parse(Path::new("jobs/sources.toml"), &text, &root())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "jobs/sources.toml: source `orders`.freshness: {expected}"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn types_match_by_family() {
        assert!(type_matches(&DataType::Utf8, &DataType::Utf8View));
        assert!(type_matches(
            &DataType::Timestamp(TimeUnit::Microsecond, None),
            &DataType::Timestamp(TimeUnit::Nanosecond, None)
        ));
        assert!(!type_matches(
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        ));
        assert!(!type_matches(
            &DataType::Decimal128(18, 2),
            &DataType::Decimal128(18, 3)
        ));
        assert!(!type_matches(&DataType::Int64, &DataType::Int32));
    }
}
