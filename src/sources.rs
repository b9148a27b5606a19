//! Source contracts (`jobs/sources.toml`): where each raw table lives, its format, Hive partition
//! columns and expected columns; checking the contract against the files and registering the table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::SessionState;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
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
            crate::config::parse_location(Path::new("/"), &loc_text)
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
        out.push(Source {
            name: s.name,
            description: s.description,
            location,
            format: s.format,
            partition_columns: s.partition_columns,
            columns,
        });
    }
    Error::from_many(problems)?;
    Ok(out)
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

    fn listing_options(&self) -> ListingOptions {
        let (format, ext): (Arc<dyn FileFormat>, &str) = match self.format {
            SourceFormat::Parquet => (Arc::new(ParquetFormat::default()), ".parquet"),
            SourceFormat::Csv => (Arc::new(CsvFormat::default().with_has_header(true)), ".csv"),
        };
        ListingOptions::new(format)
            .with_file_extension(ext)
            .with_table_partition_cols(
                self.partition_columns
                    .iter()
                    .map(|p| (p.clone(), DataType::Utf8))
                    .collect(),
            )
    }

    /// Check the files against the contract (every file, naming the first one that breaks it) and
    /// return a provider that reads them.
    pub async fn register(&self, state: &SessionState) -> Result<Arc<dyn TableProvider>> {
        let err = |message: String| Error::Contract {
            table: self.name.clone(),
            message,
        };
        let table_url =
            ListingTableUrl::parse(self.location.as_str()).map_err(|e| err(e.to_string()))?;
        let options = self.listing_options();
        let store = state
            .runtime_env()
            .object_store(&table_url)
            .map_err(|e| err(crate::storage::redact(&e.to_string())))?;
        let files: Vec<_> = table_url
            .list_all_files(state, store.as_ref(), &options.file_extension)
            .await
            .map_err(|e| err(crate::storage::redact(&e.to_string())))?
            .try_collect()
            .await
            .map_err(|e| err(io_message("list", &self.location, e)))?;
        if files.is_empty() {
            return Err(err(format!(
                "source files missing: no {} files under {}",
                options.file_extension, self.location
            )));
        }
        let file_schema = match self.format {
            SourceFormat::Csv => {
                let data: Vec<Field> = self
                    .columns
                    .iter()
                    .map(|c| Field::new(&c.name, c.data_type.clone(), true))
                    .collect();
                let schema = Arc::new(Schema::new(data));
                for f in &files {
                    self.check_csv_file(store.as_ref(), f).await?;
                }
                schema
            }
            SourceFormat::Parquet => {
                let format = options.format.clone();
                let checks = futures::stream::iter(files.iter().cloned())
                    .map(|meta| {
                        let format = format.clone();
                        let store = store.clone();
                        async move {
                            let location = meta.location.to_string();
                            let schema = format
                                .infer_schema(state, &store, std::slice::from_ref(&meta))
                                .await;
                            // Null counts from the footer's statistics, for NOT NULL columns.
                            let stats = match &schema {
                                Ok(s) => format
                                    .infer_stats(state, &store, s.clone(), &meta)
                                    .await
                                    .ok(),
                                Err(_) => None,
                            };
                            (location, meta.size, schema.map(|s| (s, stats)))
                        }
                    })
                    .buffer_unordered(16)
                    .collect::<Vec<_>>()
                    .await;
                let mut schemas = Vec::new();
                let mut sorted = checks;
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                for (location, size, schema) in sorted {
                    let schema = schema.map_err(|e| {
                        err(format!(
                            "file {location} ({size} bytes) is not readable Parquet: {}",
                            crate::storage::redact(&e.to_string())
                        ))
                    })?;
                    let (schema, stats) = schema;
                    self.check_schema(&schema, &location)?;
                    if let Some(stats) = stats {
                        self.check_not_null(&schema, &stats, &location)?;
                    }
                    schemas.push(schema);
                }
                let merged = Schema::try_merge(schemas.iter().map(|s| s.as_ref().clone()))
                    .map_err(|e| err(format!("files disagree on schema: {e}")))?;
                Arc::new(merged)
            }
        };
        let config = ListingTableConfig::new(table_url)
            .with_listing_options(options)
            .with_schema(file_schema);
        let table = ListingTable::try_new(config).map_err(|e| err(e.to_string()))?;
        Ok(Arc::new(table))
    }

    /// Columns declared `nullable = false` must hold no nulls (per the file's statistics).
    pub fn check_not_null(
        &self,
        schema: &Schema,
        stats: &datafusion::common::Statistics,
        file: &str,
    ) -> Result<()> {
        for c in self.columns.iter().filter(|c| !c.nullable) {
            let Ok(index) = schema.index_of(&c.name) else {
                continue;
            };
            let nulls = stats
                .column_statistics
                .get(index)
                .and_then(|s| s.null_count.get_value().copied());
            if let Some(n) = nulls.filter(|n| *n > 0) {
                return Err(Error::Contract {
                    table: self.name.clone(),
                    message: format!(
                        "column `{}`: declared not null but {n} value(s) are null in file {file}",
                        c.name
                    ),
                });
            }
        }
        Ok(())
    }

    /// Compare one file's schema with the contract.
    pub fn check_schema(&self, found: &Schema, file: &str) -> Result<()> {
        for c in &self.columns {
            match found.field_with_name(&c.name) {
                Err(_) => {
                    return Err(Error::Contract {
                        table: self.name.clone(),
                        message: format!(
                            "column `{}`: expected {} but the column is missing in file {file}",
                            c.name, c.declared
                        ),
                    });
                }
                Ok(f) if !type_matches(&c.data_type, f.data_type()) => {
                    return Err(Error::Contract {
                        table: self.name.clone(),
                        message: format!(
                            "column `{}`: expected {} ({}) but found {} in file {file}",
                            c.name,
                            c.declared,
                            c.data_type,
                            f.data_type()
                        ),
                    });
                }
                Ok(_) => {}
            }
        }
        let extra: Vec<&str> = found
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| !self.columns.iter().any(|c| c.name == *n))
            .collect();
        if !extra.is_empty() {
            tracing::info!(source = %self.name, file, extra = ?extra, "source file has columns beyond its contract");
        }
        Ok(())
    }

    /// Check a CSV file against the contract: the header names the columns in order, and every
    /// value parses as its column's type (the first bad value is named with its line).
    async fn check_csv_file(
        &self,
        store: &dyn object_store::ObjectStore,
        meta: &object_store::ObjectMeta,
    ) -> Result<()> {
        let err = |message: String| Error::Contract {
            table: self.name.clone(),
            message,
        };
        let bytes = store
            .get(&meta.location)
            .await
            .map_err(|e| err(io_message("read", &meta.location, e)))?
            .bytes()
            .await
            .map_err(|e| err(io_message("read", &meta.location, e)))?;
        check_csv_text(&self.name, &self.columns, &bytes, meta.location.as_ref())
    }
}

/// `cannot <verb> <location>: <error>`, with credentials redacted.
fn io_message(verb: &str, location: &dyn std::fmt::Display, e: impl std::fmt::Display) -> String {
    format!(
        "cannot {verb} {location}: {}",
        crate::storage::redact(&e.to_string())
    )
}

/// The CSV contract check on a file's bytes; `file` names it in messages.
pub fn check_csv_text(table: &str, columns: &[Column], bytes: &[u8], file: &str) -> Result<()> {
    use datafusion::arrow::array::{Array, StringArray};
    use datafusion::arrow::compute::{CastOptions, cast_with_options};
    let err = |message: String| Error::Contract {
        table: table.to_string(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| err(format!("file {file} (line 1): not readable CSV: {e}")))?
        .clone();
    for (i, c) in columns.iter().enumerate() {
        match header.get(i).map(str::trim) {
            Some(n) if n == c.name => {}
            Some(n) => {
                return Err(err(format!(
                    "column `{}`: expected it as CSV column {} but the header has `{n}` in file {file} (line 1)",
                    c.name,
                    i + 1
                )));
            }
            None => {
                return Err(err(format!(
                    "column `{}`: expected {} but the column is missing in file {file} (line 1)",
                    c.name, c.declared
                )));
            }
        }
    }
    let mut values: Vec<Vec<Option<String>>> = vec![Vec::new(); columns.len()];
    let mut lines: Vec<u64> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            err(format!("file {file} (line {line}): not readable CSV: {e}"))
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        lines.push(line);
        for (i, c) in columns.iter().enumerate() {
            let v = record.get(i).unwrap_or("");
            if v.is_empty() {
                if !c.nullable {
                    return Err(err(format!(
                        "column `{}`: expected {} but found an empty value in file {file} (line {line})",
                        c.name, c.declared
                    )));
                }
                values[i].push(None);
            } else {
                values[i].push(Some(v.to_string()));
            }
        }
    }
    let safe = CastOptions {
        safe: true,
        ..Default::default()
    };
    for (i, c) in columns.iter().enumerate() {
        if matches!(c.data_type, DataType::Utf8) {
            continue;
        }
        let text = StringArray::from(values[i].clone());
        let parsed =
            cast_with_options(&text, &c.data_type, &safe).map_err(|e| err(e.to_string()))?;
        if let Some(row) = (0..text.len()).find(|&r| text.is_valid(r) && parsed.is_null(r)) {
            return Err(err(format!(
                "column `{}`: expected {} but found `{}` in file {file} (line {})",
                c.name,
                c.declared,
                text.value(row),
                lines[row]
            )));
        }
    }
    Ok(())
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

    #[test]
    fn check_schema_names_file_and_column() {
        let s = parse(
            Path::new("s.toml"),
            "[[source]]\nname = \"t\"\ncolumns = [{ name = \"amount\", type = \"decimal(18,2)\" }]\n",
            &root(),
        )
        .unwrap();
        let found = Schema::new(vec![Field::new("amount", DataType::Float64, true)]);
        let e = s[0]
            .check_schema(&found, "raw/t/part-0.parquet")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "source `t`: column `amount`: expected decimal(18,2) (Decimal128(18, 2)) but found Float64 in file raw/t/part-0.parquet"
        );
    }
}
