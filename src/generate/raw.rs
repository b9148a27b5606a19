//! The raw writer: the schemas of the generated tables, rows as `V` values turned into record
//! batches by one schema-driven builder, LZ4 Parquet encoding, and the files under the raw root
//! (event tables by `dt=` day, customers by sign-up day, single-file dimension tables,
//! `truth.json`).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use super::model::{ProgramTruth, date_of_day, day_of_date};
use crate::error::{Error, Result};
use crate::store::Stores;

// ---------------------------------------------------------------------------------------------
// Schemas.
// ---------------------------------------------------------------------------------------------

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}
fn money() -> DataType {
    DataType::Decimal128(18, 2)
}
fn f(name: &str, t: DataType, nullable: bool) -> Field {
    Field::new(name, t, nullable)
}

/// Arrow schema of every generated table (data columns; `dt` is the Hive directory).
pub fn schema(table: &str) -> SchemaRef {
    use DataType::*;
    let fields = match table {
        "customers" => vec![
            f("customer_id", Int64, false),
            f("signup_ts", ts(), false),
            f("region", Utf8, false),
            f("acquisition_channel", Utf8, false),
        ],
        "sessions" => vec![
            f("session_id", Int64, false),
            f("customer_id", Int64, true),
            f("session_ts", ts(), false),
            f("traffic_source", Utf8, false),
            f("converted_order_id", Int64, true),
        ],
        "orders" => vec![
            f("order_id", Int64, false),
            f("customer_id", Int64, false),
            f("order_ts", ts(), false),
            f("region", Utf8, false),
            f("category", Utf8, false),
            f("gmv", money(), false),
            f("discount", money(), false),
            f("shipping_fee", money(), false),
            f("voucher_id", Int64, true),
            f("status", Utf8, false),
        ],
        "shipments" => vec![
            f("order_id", Int64, false),
            f("carrier", Utf8, false),
            f("shipped_ts", ts(), false),
            f("promised_ts", ts(), false),
            f("delivered_ts", ts(), true),
            f("status", Utf8, false),
        ],
        "refunds" => vec![
            f("refund_id", Int64, false),
            f("order_id", Int64, false),
            f("refund_ts", ts(), false),
            f("amount", money(), false),
            f("reason", Utf8, false),
        ],
        "returns" => vec![
            f("return_id", Int64, false),
            f("order_id", Int64, false),
            f("requested_ts", ts(), false),
            f("received_ts", ts(), true),
            f("reason", Utf8, false),
            f("status", Utf8, false),
        ],
        "cs_tickets" => vec![
            f("ticket_id", Int64, false),
            f("customer_id", Int64, false),
            f("order_id", Int64, true),
            f("created_ts", ts(), false),
            f("resolved_ts", ts(), true),
            f("category", Utf8, false),
            f("csat", Int32, true),
        ],
        "reviews" => vec![
            f("order_id", Int64, false),
            f("customer_id", Int64, false),
            f("review_ts", ts(), false),
            f("rating", Int32, false),
        ],
        "programs" => vec![
            f("program_id", Int64, false),
            f("name", Utf8, false),
            f("kind", Utf8, false),
            f("start_date", Date32, false),
            f("end_date", Date32, false),
            f("holdout_share", DataType::Decimal128(5, 4), false),
        ],
        "touches" => vec![
            f("customer_id", Int64, false),
            f("program_id", Int64, false),
            f("touch_ts", ts(), false),
            f("is_holdout", Boolean, false),
        ],
        "vouchers" => vec![
            f("voucher_id", Int64, false),
            f("customer_id", Int64, false),
            f("program_id", Int64, false),
            f("issued_ts", ts(), false),
            f("reason", Utf8, false),
            f("face_value", money(), false),
            f("expires_ts", ts(), false),
            f("redeemed_order_id", Int64, true),
        ],
        "marketing_spend" => vec![
            f("spend_id", Int64, false),
            f("program_id", Int64, false),
            f("channel", Utf8, false),
            f("spend_date", Date32, false),
            f("amount", money(), false),
        ],
        other => panic!("no schema for table {other}"),
    };
    Arc::new(Schema::new(fields))
}

/// Tables partitioned by day (`dt=YYYY-MM-DD/`).
pub const EVENT_TABLES: [&str; 10] = [
    "sessions",
    "orders",
    "shipments",
    "refunds",
    "returns",
    "cs_tickets",
    "reviews",
    "touches",
    "vouchers",
    "marketing_spend",
];

// ---------------------------------------------------------------------------------------------
// Rows and record batches.
// ---------------------------------------------------------------------------------------------

/// One value of a generated row.
#[derive(Debug, Clone)]
pub(super) enum V {
    I(i64),
    OptI(Option<i64>),
    I32(i32),
    OptI32(Option<i32>),
    S(&'static str),
    Str(String),
    T(i64),
    OptT(Option<i64>),
    M(i128),
    D(i32),
    B(bool),
}

/// Rows of one table, to become one Parquet file.
#[derive(Debug, Default)]
pub(super) struct Rows(pub(super) Vec<Vec<V>>);

impl FromIterator<Vec<V>> for Rows {
    fn from_iter<I: IntoIterator<Item = Vec<V>>>(rows: I) -> Self {
        Rows(rows.into_iter().collect())
    }
}

impl Rows {
    /// The rows as a batch of `schema`: column `c` of the batch is value `c` of every row.
    pub(super) fn to_batch(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, field)| column(field, self.0.iter().map(|r| &r[c])))
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// One column of `field`'s type from the values of the rows.
fn column<'a>(field: &Field, col: impl Iterator<Item = &'a V>) -> Result<ArrayRef> {
    Ok(match field.data_type() {
        DataType::Int64 => Arc::new(Int64Array::from(
            col.map(|v| match v {
                V::I(x) => Some(*x),
                V::OptI(x) => *x,
                _ => unreachable!("int64 column"),
            })
            .collect::<Vec<_>>(),
        )),
        DataType::Int32 => Arc::new(Int32Array::from(
            col.map(|v| match v {
                V::I32(x) => Some(*x),
                V::OptI32(x) => *x,
                _ => unreachable!("int32 column"),
            })
            .collect::<Vec<_>>(),
        )),
        DataType::Utf8 => Arc::new(StringArray::from(
            col.map(|v| match v {
                V::S(s) => s,
                V::Str(s) => s.as_str(),
                _ => unreachable!("string column"),
            })
            .collect::<Vec<_>>(),
        )),
        DataType::Timestamp(_, _) => Arc::new(
            TimestampMicrosecondArray::from(
                col.map(|v| match v {
                    V::T(x) => Some(*x),
                    V::OptT(x) => *x,
                    _ => unreachable!("timestamp column"),
                })
                .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        DataType::Decimal128(p, s) => Arc::new(
            Decimal128Array::from(
                col.map(|v| match v {
                    V::M(x) => *x,
                    _ => unreachable!("decimal column"),
                })
                .collect::<Vec<_>>(),
            )
            .with_precision_and_scale(*p, *s)?,
        ),
        DataType::Date32 => Arc::new(Date32Array::from(
            col.map(|v| match v {
                V::D(x) => *x,
                _ => unreachable!("date column"),
            })
            .collect::<Vec<_>>(),
        )),
        DataType::Boolean => Arc::new(BooleanArray::from(
            col.map(|v| match v {
                V::B(x) => *x,
                _ => unreachable!("boolean column"),
            })
            .collect::<Vec<_>>(),
        )),
        other => unreachable!("generated type {other}"),
    })
}

/// Parquet settings of generated raw files: LZ4 (raw), page statistics. A generated lake is
/// thousands of small files of about ten columns each, and the Parquet writer makes a fresh zstd
/// compressor and decompressor for every column of every file: with zstd, making them was a
/// quarter of the generator's time.
fn raw_writer_properties() -> datafusion::parquet::file::properties::WriterProperties {
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
    WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .set_statistics_enabled(EnabledStatistics::Page)
        .build()
}

/// Encode batches as one Parquet file.
pub fn parquet_bytes(schema: SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(raw_writer_properties()))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(buf)
}

/// Put one object; the store's own put is atomic, so a reader never sees half a file.
pub async fn put(
    store: &Arc<dyn ObjectStore>,
    path: &StorePath,
    bytes: Vec<u8>,
    location: &Url,
) -> Result<()> {
    store
        .put(path, PutPayload::from(bytes))
        .await
        .map_err(|e| Error::storage(location, e))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Files under the raw root.
// ---------------------------------------------------------------------------------------------

/// Rows waiting for their day to close.
#[derive(Default)]
pub(super) struct Day {
    pub(super) tables: BTreeMap<&'static str, Rows>,
}

/// Writes the generated tables under one raw root and counts the rows written per table. Each
/// file belongs to one day (a day's partition, the customers who signed up that day, a posting
/// day of the ledger) or to the lake's creation (programs, plan, FX rates), so a lake extended
/// day by day gets exactly the files of one generated in one go, and no file is written twice.
pub(super) struct RawWriter {
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    location: Url,
    pub(super) counts: BTreeMap<String, u64>,
    /// The days whose files this run writes.
    days: RangeInclusive<i64>,
    /// Whether this run creates the lake, and so writes the files of no day.
    creates: bool,
    /// Files being encoded and put while the simulation goes on (at most `IN_FLIGHT`).
    pending: tokio::task::JoinSet<Result<()>>,
}

/// Files encoded at once beside the simulation: enough to keep a second core busy, few enough
/// that the rows waiting stay a few days' worth.
const IN_FLIGHT: usize = 8;

impl RawWriter {
    pub(super) fn new(
        stores: &Stores,
        location: &Url,
        days: RangeInclusive<i64>,
        creates: bool,
    ) -> Result<Self> {
        let (store, root) = stores.store_for(location)?;
        Ok(RawWriter {
            store,
            root,
            location: location.clone(),
            counts: BTreeMap::new(),
            days,
            creates,
            pending: tokio::task::JoinSet::new(),
        })
    }

    /// `<table>/[<dir>/]part-<part>.parquet`.
    fn part_path(&self, table: &str, dir: Option<&str>, part: &str) -> StorePath {
        let mut path = self.root.clone().join(table);
        if let Some(dir) = dir {
            path = path.join(dir);
        }
        path.join(format!("part-{part}.parquet").as_str())
    }

    /// Encode `rows` as `schema` and put them at `path`, counting them for `table`: on a
    /// blocking thread, while the caller simulates the next day (`finish` waits for them all).
    /// Each file's bytes depend only on its rows, so the lake is the same byte for byte.
    async fn write_rows(
        &mut self,
        table: &str,
        path: &StorePath,
        schema: SchemaRef,
        rows: Rows,
    ) -> Result<()> {
        *self.counts.entry(table.to_string()).or_default() += rows.0.len() as u64;
        while self.pending.len() >= IN_FLIGHT {
            self.join_one().await?;
        }
        let (store, path, location) = (self.store.clone(), path.clone(), self.location.clone());
        self.pending.spawn(async move {
            let bytes = tokio::task::spawn_blocking(move || {
                parquet_bytes(schema.clone(), &[rows.to_batch(&schema)?])
            })
            .await
            .map_err(|e| Error::storage(&location, e))??;
            put(&store, &path, bytes, &location).await
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.pending.join_next().await {
            Some(done) => done.map_err(|e| Error::storage(&self.location, e))?,
            None => Ok(()),
        }
    }

    /// Wait for every file handed to the background; the first error, if any.
    pub(super) async fn finish(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.join_one().await?;
        }
        Ok(())
    }

    /// Whether this run writes the files of `day`.
    fn writes(&self, day: Option<i64>) -> bool {
        day.map_or(self.creates, |d| self.days.contains(&d))
    }

    /// One table file: `<table>/part-0000.parquet`, or under `dt=<day>/`.
    pub(super) async fn write_file(
        &mut self,
        table: &str,
        day: Option<NaiveDate>,
        schema: SchemaRef,
        rows: Rows,
    ) -> Result<()> {
        if !self.writes(day.map(day_of_date)) {
            return Ok(());
        }
        let dir = day.map(|d| format!("dt={d}"));
        let path = self.part_path(table, dir.as_deref(), "0000");
        self.write_rows(table, &path, schema, rows).await
    }

    /// One day of event tables, written when the day closes: one file per table with rows.
    pub(super) async fn write_day(&mut self, day: i64, rows: Day) -> Result<()> {
        if !self.writes(Some(day)) {
            return Ok(());
        }
        let dir = format!("dt={}", date_of_day(day));
        for (table, rows) in rows.tables {
            if rows.0.is_empty() {
                continue;
            }
            let path = self.part_path(table, Some(dir.as_str()), "0000");
            self.write_rows(table, &path, schema(table), rows).await?;
        }
        Ok(())
    }

    /// `customers/part-<day>.parquet`: the customers who signed up on `day`.
    pub(super) async fn write_customers(&mut self, day: i64, rows: Rows) -> Result<()> {
        if rows.0.is_empty() || !self.writes(Some(day)) {
            return Ok(());
        }
        let path = self.part_path("customers", None, &date_of_day(day).to_string());
        self.write_rows("customers", &path, schema("customers"), rows)
            .await
    }

    /// The `programs` dimension: one row per program with the days it runs.
    pub(super) async fn write_programs(
        &mut self,
        programs: &[ProgramTruth],
        program_days: &[(i64, i64)],
    ) -> Result<()> {
        let rows: Rows = programs
            .iter()
            .zip(program_days)
            .map(|(p, (from, to))| {
                let holdout = (p.holdout_share * 10_000.0).round() as i128;
                vec![
                    V::I(p.program_id),
                    V::Str(p.name.clone()),
                    V::Str(p.kind.clone()),
                    V::D(*from as i32),
                    V::D(*to as i32),
                    V::M(holdout),
                ]
            })
            .collect();
        self.write_file("programs", None, schema("programs"), rows)
            .await
    }

    /// `truth.json` at the raw root, once every table file is written: a lake with its truth is
    /// complete.
    pub(super) async fn write_json(&mut self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.finish().await?;
        let path = self.root.clone().join(name);
        put(&self.store, &path, bytes, &self.location).await
    }
}
