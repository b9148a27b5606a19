//! The raw writer: the schemas of the generated tables, rows as `V` values turned into record
//! batches by one schema-driven builder, their Parquet encoding, and the files under the raw root
//! (event tables by `dt=` day, customers by sign-up day, single-file dimension tables,
//! `truth.json`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::{Arc, LazyLock};

use chrono::NaiveDate;
use datafusion::arrow::array::builder::NullBufferBuilder;
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

/// Arrow schema of every generated table (data columns; `dt` is the Hive directory), built
/// once: the simulation starts a table's rows thousands of times.
pub fn schema(table: &str) -> SchemaRef {
    static SCHEMAS: LazyLock<Vec<(&str, SchemaRef)>> = LazyLock::new(|| {
        let tables = EVENT_TABLES.iter().chain(&["customers", "programs"]);
        tables.map(|t| (*t, table_schema(t))).collect()
    });
    let known = SCHEMAS.iter().find(|(name, _)| *name == table);
    known
        .unwrap_or_else(|| panic!("no schema for table {table}"))
        .1
        .clone()
}

fn table_schema(table: &str) -> SchemaRef {
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

/// The event tables the simulation writes, by position in [`EVENT_TABLES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Sessions,
    Orders,
    Shipments,
    Refunds,
    Returns,
    CsTickets,
    Reviews,
    Touches,
    Vouchers,
    MarketingSpend,
}

impl Table {
    pub(super) fn name(self) -> &'static str {
        EVENT_TABLES[self as usize]
    }
}

/// One column being built: plain vectors the simulation's thread pushes to, turned into the
/// Arrow array of the field's type by the thread that encodes the file.
enum Column {
    Int64(Vec<i64>, NullBufferBuilder),
    Int32(Vec<i32>, NullBufferBuilder),
    Utf8(Vec<Cow<'static, str>>),
    Timestamp(Vec<i64>, NullBufferBuilder),
    Decimal(Vec<i128>),
    Date(Vec<i32>),
    Boolean(Vec<bool>),
}

impl Column {
    /// An empty column of `field`'s type with room for `rows` values.
    fn new(field: &Field, rows: usize) -> Self {
        let nulls = || NullBufferBuilder::new(rows);
        match field.data_type() {
            DataType::Int64 => Column::Int64(Vec::with_capacity(rows), nulls()),
            DataType::Int32 => Column::Int32(Vec::with_capacity(rows), nulls()),
            DataType::Utf8 => Column::Utf8(Vec::with_capacity(rows)),
            DataType::Timestamp(_, _) => Column::Timestamp(Vec::with_capacity(rows), nulls()),
            DataType::Decimal128(_, _) => Column::Decimal(Vec::with_capacity(rows)),
            DataType::Date32 => Column::Date(Vec::with_capacity(rows)),
            DataType::Boolean => Column::Boolean(Vec::with_capacity(rows)),
            other => unreachable!("generated type {other}"),
        }
    }

    #[inline(always)]
    fn push(&mut self, v: V) {
        fn value<T: Default>(values: &mut Vec<T>, nulls: &mut NullBufferBuilder, x: Option<T>) {
            nulls.append(x.is_some());
            values.push(x.unwrap_or_default());
        }
        match (self, v) {
            (Column::Int64(values, nulls), V::I(x)) => value(values, nulls, Some(x)),
            (Column::Int64(values, nulls), V::OptI(x)) => value(values, nulls, x),
            (Column::Int32(values, nulls), V::I32(x)) => value(values, nulls, Some(x)),
            (Column::Int32(values, nulls), V::OptI32(x)) => value(values, nulls, x),
            (Column::Utf8(values), V::S(x)) => values.push(Cow::Borrowed(x)),
            (Column::Utf8(values), V::Str(x)) => values.push(Cow::Owned(x)),
            (Column::Timestamp(values, nulls), V::T(x)) => value(values, nulls, Some(x)),
            (Column::Timestamp(values, nulls), V::OptT(x)) => value(values, nulls, x),
            (Column::Decimal(values), V::M(x)) => values.push(x),
            (Column::Date(values), V::D(x)) => values.push(x),
            (Column::Boolean(values), V::B(x)) => values.push(x),
            (_, v) => unreachable!("{v:?} does not fit the column's type"),
        }
    }

    /// The column as an Arrow array of `field`'s type (a decimal's precision and scale, a
    /// timestamp's zone).
    fn finish(self, field: &Field) -> Result<ArrayRef> {
        let data_type = field.data_type().clone();
        Ok(match self {
            Column::Int64(values, mut nulls) => {
                Arc::new(Int64Array::new(values.into(), nulls.finish()))
            }
            Column::Int32(values, mut nulls) => {
                Arc::new(Int32Array::new(values.into(), nulls.finish()))
            }
            Column::Utf8(values) => Arc::new(StringArray::from_iter_values(values)),
            Column::Timestamp(values, mut nulls) => Arc::new(
                TimestampMicrosecondArray::new(values.into(), nulls.finish())
                    .with_data_type(data_type),
            ),
            Column::Decimal(values) => {
                Arc::new(Decimal128Array::from(values).with_data_type(data_type))
            }
            Column::Date(values) => Arc::new(Date32Array::from(values)),
            Column::Boolean(values) => Arc::new(BooleanArray::from(values)),
        })
    }
}

/// Rows of one table, to become one Parquet file: built column by column as they are pushed.
pub(super) struct Rows {
    schema: SchemaRef,
    columns: Vec<Column>,
    len: usize,
}

impl Rows {
    pub(super) fn new(schema: SchemaRef) -> Self {
        Rows::with_capacity(schema, 0)
    }

    /// No rows yet, with room for `rows` of them.
    pub(super) fn with_capacity(schema: SchemaRef, rows: usize) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| Column::new(f, rows))
            .collect();
        Rows {
            schema,
            columns,
            len: 0,
        }
    }

    /// Rows of `schema` from rows of values, one per column.
    pub(super) fn of<const N: usize>(
        schema: SchemaRef,
        rows: impl IntoIterator<Item = [V; N]>,
    ) -> Self {
        let mut all = Rows::new(schema);
        for row in rows {
            all.push(row);
        }
        all
    }

    /// Append one row: value `c` goes to column `c`.
    #[inline(always)]
    pub(super) fn push<const N: usize>(&mut self, row: [V; N]) {
        assert_eq!(N, self.columns.len(), "a row of {}", self.schema);
        for (column, v) in self.columns.iter_mut().zip(row) {
            column.push(v);
        }
        self.len += 1;
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rows as one record batch of their schema.
    pub(super) fn into_batch(self) -> Result<RecordBatch> {
        let columns = self
            .columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(column, field)| column.finish(field))
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new(self.schema, columns)?)
    }
}

/// Parquet settings of generated raw files of `schema`, none of them compressed:
/// - Numbers (ids, times, amounts, days) are delta-encoded (`DELTA_BINARY_PACKED`), with min and
///   max per column chunk. A day's ids, times and amounts are nearly all distinct, so a
///   dictionary of them never pays, but they are close together: at 10M orders the lake is 42%
///   smaller than with plain numbers compressed with LZ4 (746 against 1,296 MB), for about 6%
///   less of the generator's CPU. LZ4 made microsecond timestamps only 1-4% smaller.
/// - Strings are a few names each: a dictionary, whose indices are bit-packed runs that LZ4 left
///   0.4% larger. Their min and max, compared value by value, were 4% of the generator's CPU,
///   and no reader uses them: a required string column (every generated one) has no nulls to
///   count either.
/// - No page index (it would repeat the chunk statistics of the one page per column a file of a
///   day mostly has), and no zstd: the Parquet writer makes a fresh compressor and decompressor
///   for every column of every file, which was a quarter of the generator's time.
fn raw_writer_properties(
    schema: &Schema,
) -> datafusion::parquet::file::properties::WriterProperties {
    use datafusion::parquet::basic::{Compression, Encoding};
    use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use datafusion::parquet::schema::types::ColumnPath;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_dictionary_enabled(false);
    for field in schema.fields() {
        let column = ColumnPath::from(field.name().as_str());
        match field.data_type() {
            DataType::Utf8 => {
                if !field.is_nullable() {
                    let none = EnabledStatistics::None;
                    props = props.set_column_statistics_enabled(column.clone(), none);
                }
                props = props.set_column_dictionary_enabled(column, true)
            }
            // Decimals of up to 18 digits are stored as integers.
            DataType::Int32
            | DataType::Int64
            | DataType::Date32
            | DataType::Timestamp(..)
            | DataType::Decimal128(..=18, _) => {
                props = props.set_column_encoding(column, Encoding::DELTA_BINARY_PACKED)
            }
            _ => {}
        }
    }
    props.build()
}

/// Encode the chunks of one file (the shards' rows of a table and day) as one Parquet file, in
/// order: a record batch each, so no chunk is copied into a larger one first.
fn chunks_parquet_bytes(chunks: Vec<Rows>) -> Result<Vec<u8>> {
    let schema = chunks.first().expect("a file has a chunk").schema.clone();
    let batches = chunks
        .into_iter()
        .map(Rows::into_batch)
        .collect::<Result<Vec<_>>>()?;
    parquet_bytes(schema, &batches)
}

/// Encode batches as one Parquet file.
pub fn parquet_bytes(schema: SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    // Room for the file at once: encoded (numbers delta-packed, strings as dictionary indices),
    // it is well under half the rows' memory.
    let memory: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut buf = Vec::with_capacity(memory / 2 + 4096);
    let props = raw_writer_properties(&schema);
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))?;
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

/// Rows waiting for their day to close, by event table: one chunk per customer shard that had
/// rows for the table, in shard order, to be written as one file.
#[derive(Default)]
pub(super) struct Day {
    tables: [Vec<Rows>; EVENT_TABLES.len()],
}

impl Day {
    /// The rows of `table` on this day (in one shard's day, its only chunk), started with room
    /// for `expected` rows.
    pub(super) fn rows(&mut self, table: Table, expected: usize) -> &mut Rows {
        let chunks = &mut self.tables[table as usize];
        if chunks.is_empty() {
            chunks.push(Rows::with_capacity(schema(table.name()), expected));
        }
        chunks.last_mut().expect("pushed")
    }

    /// How many rows of each table the day has.
    pub(super) fn lens(&self) -> [usize; EVENT_TABLES.len()] {
        self.tables
            .each_ref()
            .map(|chunks| chunks.iter().map(Rows::len).sum())
    }

    /// Put the rows of `later` (the next shard's same day) after these.
    pub(super) fn append(&mut self, later: Day) {
        for (chunks, more) in self.tables.iter_mut().zip(later.tables) {
            chunks.extend(more);
        }
    }
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
const IN_FLIGHT: usize = 32;

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

    /// Encode the chunks of `rows` as one file and put it at `path`, counting the rows for
    /// `table`: on a blocking thread, while the caller simulates the next day (`finish` waits
    /// for them all). Each file's bytes depend only on its rows, so the lake is the same byte
    /// for byte.
    async fn write_rows(&mut self, table: &str, path: &StorePath, rows: Vec<Rows>) -> Result<()> {
        let n: usize = rows.iter().map(Rows::len).sum();
        *self.counts.entry(table.to_string()).or_default() += n as u64;
        while self.pending.len() >= IN_FLIGHT {
            self.join_one().await?;
        }
        let (store, path, location) = (self.store.clone(), path.clone(), self.location.clone());
        self.pending.spawn(async move {
            let bytes = tokio::task::spawn_blocking(move || chunks_parquet_bytes(rows))
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
        rows: Rows,
    ) -> Result<()> {
        if !self.writes(day.map(day_of_date)) {
            return Ok(());
        }
        let dir = day.map(|d| format!("dt={d}"));
        let path = self.part_path(table, dir.as_deref(), "0000");
        self.write_rows(table, &path, vec![rows]).await
    }

    /// One day of event tables, written when the day closes: one file per table with rows.
    pub(super) async fn write_day(&mut self, day: i64, rows: Day) -> Result<()> {
        if !self.writes(Some(day)) {
            return Ok(());
        }
        let dir = format!("dt={}", date_of_day(day));
        for (table, mut rows) in EVENT_TABLES.iter().zip(rows.tables) {
            rows.retain(|r| !r.is_empty());
            if rows.is_empty() {
                continue;
            }
            let path = self.part_path(table, Some(dir.as_str()), "0000");
            self.write_rows(table, &path, rows).await?;
        }
        Ok(())
    }

    /// `customers/part-<day>.parquet`: the customers who signed up on `day`, by shard.
    pub(super) async fn write_customers(&mut self, day: i64, mut rows: Vec<Rows>) -> Result<()> {
        rows.retain(|r| !r.is_empty());
        if rows.is_empty() || !self.writes(Some(day)) {
            return Ok(());
        }
        let path = self.part_path("customers", None, &date_of_day(day).to_string());
        self.write_rows("customers", &path, rows).await
    }

    /// The `programs` dimension: one row per program with the days it runs.
    pub(super) async fn write_programs(
        &mut self,
        programs: &[ProgramTruth],
        program_days: &[(i64, i64)],
    ) -> Result<()> {
        let rows = programs.iter().zip(program_days).map(|(p, (from, to))| {
            let holdout = (p.holdout_share * 10_000.0).round() as i128;
            [
                V::I(p.program_id),
                V::Str(p.name.clone()),
                V::Str(p.kind.clone()),
                V::D(*from as i32),
                V::D(*to as i32),
                V::M(holdout),
            ]
        });
        let rows = Rows::of(schema("programs"), rows);
        self.write_file("programs", None, rows).await
    }

    /// `truth.json` at the raw root, once every table file is written: a lake with its truth is
    /// complete.
    pub(super) async fn write_json(&mut self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.finish().await?;
        let path = self.root.clone().join(name);
        put(&self.store, &path, bytes, &self.location).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use datafusion::parquet::basic::{Compression, Encoding};
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

    fn sessions() -> Rows {
        Rows::of(
            schema("sessions"),
            [
                [
                    V::I(1),
                    V::OptI(Some(7)),
                    V::T(10),
                    V::S("ads"),
                    V::OptI(Some(3)),
                ],
                [V::I(2), V::OptI(None), V::T(20), V::S("seo"), V::OptI(None)],
                [
                    V::I(3),
                    V::OptI(Some(8)),
                    V::T(30),
                    V::S("ads"),
                    V::OptI(None),
                ],
            ],
        )
    }

    #[test]
    fn rows_become_a_batch_of_their_schema_with_nulls_where_pushed() {
        let rows = sessions();
        assert_eq!(rows.len(), 3);
        let batch = rows.into_batch().unwrap();
        assert_eq!(batch.schema(), schema("sessions"));
        let customer = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(
            customer.iter().collect::<Vec<_>>(),
            [Some(7), None, Some(8)]
        );
        let converted = batch.column(4).as_primitive::<Int64Type>();
        assert_eq!(converted.null_count(), 2);
        assert!(batch.column(0).nulls().is_none());
        let at = batch.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.values().to_vec(), [10, 20, 30]);
        let source = batch.column(3).as_string::<i32>();
        assert_eq!(
            source.iter().flatten().collect::<Vec<_>>(),
            ["ads", "seo", "ads"]
        );
    }

    #[test]
    fn shards_chunks_become_one_file_in_order_with_their_nulls() {
        // A chunk without nulls after one with them, and one with them after one without.
        let full = Rows::of(
            schema("sessions"),
            [[
                V::I(4),
                V::OptI(Some(9)),
                V::T(40),
                V::S("email"),
                V::OptI(Some(5)),
            ]],
        );
        let bytes = chunks_parquet_bytes(vec![sessions(), full, sessions()]).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        let batch = concat_batches(&schema("sessions"), &batches).unwrap();
        assert_eq!(batch.num_rows(), 7);
        let customer = batch.column(1).as_primitive::<Int64Type>();
        assert_eq!(
            customer.iter().collect::<Vec<_>>(),
            [Some(7), None, Some(8), Some(9), Some(7), None, Some(8)]
        );
        let converted = batch.column(4).as_primitive::<Int64Type>();
        assert_eq!(converted.null_count(), 4);
        assert_eq!(batch.column(0).null_count(), 0);
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), [1, 2, 3, 4, 1, 2, 3]);
        let source = batch.column(3).as_string::<i32>();
        assert_eq!(source.value(3), "email");
        assert_eq!(source.value(5), "seo");
    }

    #[test]
    fn a_nullable_string_keeps_its_statistics_for_its_null_count() {
        use datafusion::parquet::file::properties::EnabledStatistics;
        use datafusion::parquet::schema::types::ColumnPath;
        let schema = Schema::new(vec![
            f("status", DataType::Utf8, false),
            f("note", DataType::Utf8, true),
        ]);
        let props = raw_writer_properties(&schema);
        let stats = |c: &str| props.statistics_enabled(&ColumnPath::from(c));
        assert_eq!(stats("status"), EnabledStatistics::None);
        assert_eq!(stats("note"), EnabledStatistics::Chunk);
    }

    #[test]
    fn raw_files_delta_encode_numbers_and_compress_nothing() {
        let batch = sessions().into_batch().unwrap();
        let bytes =
            Bytes::from(parquet_bytes(batch.schema(), std::slice::from_ref(&batch)).unwrap());
        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        let group = reader.metadata().row_group(0);
        let dictionary = |c: usize| {
            group
                .column(c)
                .encodings()
                .any(|e| e == Encoding::RLE_DICTIONARY)
        };
        assert!(dictionary(3), "traffic_source");
        let delta = |c: usize| {
            group
                .column(c)
                .encodings()
                .any(|e| e == Encoding::DELTA_BINARY_PACKED)
        };
        assert!(
            [0, 1, 2, 4].map(delta) == [true; 4] && !delta(3),
            "ids and times delta-encoded, strings not"
        );
        assert!(
            !dictionary(0) && !dictionary(2),
            "no dictionary of ids or times"
        );
        let compression = |c: usize| group.column(c).compression();
        assert!(
            (0..5)
                .map(compression)
                .all(|c| c == Compression::UNCOMPRESSED),
            "nothing compressed"
        );
        assert!(
            group.column(3).statistics().is_none(),
            "no statistics on strings"
        );
        let stats = group.column(0).statistics().unwrap();
        assert_eq!(stats.min_bytes_opt(), Some(&1i64.to_le_bytes()[..]));
        assert!(reader.metadata().column_index().is_none(), "no page index");
        let read = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(read, batch);
    }
}
