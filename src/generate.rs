//! `retention generate`: a deterministic synthetic marketplace written as raw Parquet sources
//! (Hive-partitioned by day) to any object-store URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use datafusion::arrow::array::{
    ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use url::Url;

use crate::error::{Error, Result};
use crate::storage::Stores;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub seed: u64,
    pub customers: u64,
    pub months: u32,
    pub start: NaiveDate,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            seed: 42,
            customers: 20_000,
            months: 24,
            start: NaiveDate::from_ymd_opt(2024, 11, 1).expect("valid date"),
        }
    }
}

/// Row counts written per table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Generated {
    pub tables: BTreeMap<String, u64>,
}

const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
const CHANNELS: [&str; 4] = ["organic", "search", "social", "referral"];
const CATEGORIES: [&str; 5] = ["fashion", "electronics", "home", "beauty", "grocery"];

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Schema of the generated `customers` table.
pub fn customers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("signup_ts", ts_type(), false),
        Field::new("region", DataType::Utf8, false),
        Field::new("acquisition_channel", DataType::Utf8, false),
    ]))
}

/// Schema of the generated `orders` table (without the `dt` partition column).
pub fn orders_schema() -> SchemaRef {
    let money = DataType::Decimal128(18, 2);
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        Field::new("order_ts", ts_type(), false),
        Field::new("region", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("gmv", money.clone(), false),
        Field::new("discount", money.clone(), false),
        Field::new("shipping_fee", money, false),
        Field::new("voucher_id", DataType::Int64, true),
        Field::new("status", DataType::Utf8, false),
    ]))
}

/// Encode batches as one zstd Parquet file.
pub fn parquet_bytes(schema: SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(crate::curated::writer_properties()))
        .map_err(|e| Error::DataFusion(e.to_string()))?;
    for b in batches {
        w.write(b).map_err(|e| Error::DataFusion(e.to_string()))?;
    }
    w.close().map_err(|e| Error::DataFusion(e.to_string()))?;
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
        .map_err(|e| Error::Storage {
            location: location.to_string(),
            message: crate::storage::redact(&e.to_string()),
        })?;
    Ok(())
}

/// Generate the marketplace under `raw_root`.
pub async fn generate(
    stores: &Stores,
    raw_root: &Url,
    opts: &GenerateOptions,
) -> Result<Generated> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let (store, root_path) = stores.store_for(raw_root)?;
    let start = Utc.from_utc_datetime(&opts.start.and_hms_opt(0, 0, 0).expect("midnight"));
    let end_date = opts.start + chrono::Months::new(opts.months);
    let end = Utc.from_utc_datetime(&end_date.and_hms_opt(0, 0, 0).expect("midnight"));
    let span_secs = (end - start).num_seconds().max(1);

    let mut ids = Vec::new();
    let mut signups = Vec::new();
    let mut regions = Vec::new();
    let mut channels = Vec::new();
    // orders bucketed by day: (order_id, customer, ts, region, category, gmv, discount, fee, voucher, status)
    type Row = (
        i64,
        i64,
        i64,
        &'static str,
        &'static str,
        i128,
        i128,
        i128,
        Option<i64>,
        &'static str,
    );
    let mut by_day: BTreeMap<NaiveDate, Vec<Row>> = BTreeMap::new();
    let mut next_order = 1i64;
    for c in 0..opts.customers {
        let customer_id = c as i64 + 1;
        let signup = start + Duration::seconds(rng.random_range(0..span_secs));
        let region = REGIONS[rng.random_range(0..REGIONS.len())];
        let channel = CHANNELS[rng.random_range(0..CHANNELS.len())];
        ids.push(customer_id);
        signups.push(signup.timestamp_micros());
        regions.push(region);
        channels.push(channel);
        let mut t = signup + Duration::minutes(rng.random_range(0..600));
        loop {
            if t >= end {
                break;
            }
            let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
            // heavy-tailed basket: lognormal-ish via exp of a uniform sum
            let u: f64 = (0..3).map(|_| rng.random::<f64>()).sum::<f64>() / 3.0;
            let gmv_cents = (1500.0 * (u * 3.0).exp()) as i128;
            let discount = if rng.random_bool(0.2) {
                gmv_cents / 10
            } else {
                0
            };
            let fee = if gmv_cents > 5000 { 0 } else { 399 };
            let status = if rng.random_bool(0.03) {
                "cancelled"
            } else {
                "completed"
            };
            by_day.entry(t.date_naive()).or_default().push((
                next_order,
                customer_id,
                t.timestamp_micros(),
                region,
                category,
                gmv_cents,
                discount,
                fee,
                None,
                status,
            ));
            next_order += 1;
            // come back with probability 0.6, after an exponential gap (mean 45 days)
            if !rng.random_bool(0.6) {
                break;
            }
            let gap_days = -45.0 * (1.0 - rng.random::<f64>()).ln();
            t += Duration::seconds((gap_days * 86_400.0) as i64 + 1);
        }
    }

    let mut out = Generated::default();
    let customers = RecordBatch::try_new(
        customers_schema(),
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(TimestampMicrosecondArray::from(signups).with_timezone("UTC")),
            Arc::new(StringArray::from(regions)),
            Arc::new(StringArray::from(channels)),
        ],
    )
    .map_err(|e| Error::DataFusion(e.to_string()))?;
    out.tables
        .insert("customers".into(), customers.num_rows() as u64);
    let path = root_path.clone().join("customers").join("part-0.parquet");
    put(
        &store,
        &path,
        parquet_bytes(customers_schema(), &[customers])?,
        raw_root,
    )
    .await?;

    let mut orders_total = 0u64;
    for (day, rows) in by_day {
        let money = |f: &dyn Fn(&Row) -> i128| -> ArrayRef {
            Arc::new(
                Decimal128Array::from(rows.iter().map(f).collect::<Vec<_>>())
                    .with_precision_and_scale(18, 2)
                    .expect("valid decimal"),
            )
        };
        let batch = RecordBatch::try_new(
            orders_schema(),
            vec![
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )) as ArrayRef,
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.4).collect::<Vec<_>>(),
                )),
                money(&|r| r.5),
                money(&|r| r.6),
                money(&|r| r.7),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.8).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.9).collect::<Vec<_>>(),
                )),
            ],
        )
        .map_err(|e| Error::DataFusion(e.to_string()))?;
        orders_total += batch.num_rows() as u64;
        let dir = format!("dt={:04}-{:02}-{:02}", day.year(), day.month(), day.day());
        let path = root_path
            .clone()
            .join("orders")
            .join(dir.as_str())
            .join("part-0.parquet");
        put(
            &store,
            &path,
            parquet_bytes(orders_schema(), &[batch])?,
            raw_root,
        )
        .await?;
    }
    out.tables.insert("orders".into(), orders_total);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_seed_same_bytes() {
        let opts = GenerateOptions {
            customers: 50,
            months: 2,
            ..Default::default()
        };
        let root = Url::parse("memory:///raw/").unwrap();
        let a = Stores::default();
        let b = Stores::default();
        let ga = generate(&a, &root, &opts).await.unwrap();
        let gb = generate(&b, &root, &opts).await.unwrap();
        assert_eq!(ga, gb);
        assert_eq!(ga.tables["customers"], 50);
        assert!(ga.tables["orders"] >= 50);
        let (sa, _) = a.store_for(&root).unwrap();
        let (sb, _) = b.store_for(&root).unwrap();
        let p = StorePath::from("raw/customers/part-0.parquet");
        let x = sa.get(&p).await.unwrap().bytes().await.unwrap();
        let y = sb.get(&p).await.unwrap().bytes().await.unwrap();
        assert_eq!(x, y);
    }
}
