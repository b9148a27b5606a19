//! `CAST(ts AS DATE)` of a UTC or zoneless timestamp, planned as `utc_date(ts)`: the day by
//! integer division instead of arrow's cast, which goes through chrono and a time-zone lookup
//! for every value (106 ms of order_experience's final projection over 1M orders).
//!
//! The logical rule rewrites the casts in projections, aggregates, windows and sorts, keeping
//! each expression's name. Filters, joins and scans keep the cast: Parquet and Delta pruning
//! understand a cast of a column, not a function.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Date32Array};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, Field, FieldRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

/// The days chrono can represent, as arrow's cast checks them: beyond, the cast's own error.
const REPRESENTABLE_DAYS: std::ops::RangeInclusive<i64> = -96_000_000..=95_000_000;

fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "+00:00" | "Z")
}

/// The day (days since 1970-01-01, floored) of each date, or of each UTC or zoneless timestamp;
/// `None` for other types and zones, or when a value's day is out of chrono's range.
pub fn utc_days(values: &dyn Array) -> Option<Date32Array> {
    /// Each value's day, `per_day` values a day, floored.
    fn floored<T: ArrowPrimitiveType>(values: &dyn Array, per_day: i64) -> Option<Date32Array>
    where
        T::Native: Into<i64>,
    {
        values
            .as_primitive::<T>()
            .try_unary(|v| {
                let day = v.into().div_euclid(per_day);
                REPRESENTABLE_DAYS
                    .contains(&day)
                    .then_some(day as i32)
                    .ok_or(())
            })
            .ok()
    }
    match values.data_type() {
        DataType::Date32 => floored::<Date32Type>(values, 1),
        DataType::Date64 => floored::<Date64Type>(values, 86_400_000),
        DataType::Timestamp(unit, tz) if tz.as_deref().is_none_or(is_utc) => match unit {
            TimeUnit::Second => floored::<TimestampSecondType>(values, 86_400),
            TimeUnit::Millisecond => floored::<TimestampMillisecondType>(values, 86_400_000),
            TimeUnit::Microsecond => floored::<TimestampMicrosecondType>(values, 86_400_000_000),
            TimeUnit::Nanosecond => floored::<TimestampNanosecondType>(values, 86_400_000_000_000),
        },
        _ => None,
    }
}

/// (year, month, day) of a day number (days since 1970-01-01), proleptic Gregorian: Howard
/// Hinnant's `civil_from_days`.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `utc_date(ts)`: what `CAST(ts AS DATE)` gives for a UTC or zoneless timestamp.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UtcDate {
    signature: Signature,
}

impl Default for UtcDate {
    fn default() -> Self {
        UtcDate {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for UtcDate {
    fn name(&self) -> &str {
        "utc_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Date32)
    }

    /// Null exactly where the timestamp is, as the cast.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            DataType::Date32,
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("utc_date takes one argument");
        };
        let array = value.to_array(1)?;
        let days = match utc_days(array.as_ref()) {
            Some(days) => Arc::new(days) as _,
            // Out of range: the cast's own error.
            None => datafusion::arrow::compute::cast(&array, &DataType::Date32)?,
        };
        Ok(match value {
            ColumnarValue::Array(_) => ColumnarValue::Array(days),
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&days, 0)?)
            }
        })
    }
}

/// The function, as sessions (and workers) register it.
pub fn udf() -> ScalarUDF {
    ScalarUDF::from(UtcDate::default())
}

/// The logical optimizer rule: `CAST(ts AS DATE)` of a UTC or zoneless timestamp planned as
/// `utc_date(ts)`.
pub fn rule() -> crate::engine::rewrite::FunctionRule {
    crate::engine::rewrite::FunctionRule::new("utc_date_casts", udf(), to_utc_date)
}

/// `e` as `utc_date(ts)` when it is a cast of a UTC or zoneless timestamp to a date.
fn to_utc_date(e: Expr, input: &DFSchema, udf: &Arc<ScalarUDF>) -> Result<Transformed<Expr>> {
    let Expr::Cast(Cast { expr, field }) = &e else {
        return Ok(Transformed::no(e));
    };
    let utc_timestamp = matches!(
        expr.get_type(input)?,
        DataType::Timestamp(_, tz) if tz.as_deref().is_none_or(is_utc)
    );
    if *field.data_type() != DataType::Date32 || !utc_timestamp {
        return Ok(Transformed::no(e));
    }
    Ok(Transformed::yes(udf.call(vec![expr.as_ref().clone()])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, TimestampMicrosecondArray, TimestampSecondArray};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    fn session(rewrite: bool) -> SessionContext {
        crate::engine::rewrite::test_session(Some(rule()).filter(|_| rewrite))
    }

    /// Instants around midnight, before 1970 and in a leap year, with a null: as UTC
    /// microseconds and as zoneless seconds.
    fn register(ctx: &SessionContext) {
        let micros = [
            Some(-1),
            Some(0),
            Some(86_399_999_999),
            Some(951_782_400_000_000),
            Some(1_782_863_999_999_999),
            None,
        ];
        let utc: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("UTC"));
        let naive: ArrayRef = Arc::new(TimestampSecondArray::from(
            micros
                .iter()
                .map(|m| m.map(|m| m.div_euclid(1_000_000)))
                .collect::<Vec<_>>(),
        ));
        let batch = datafusion::arrow::record_batch::RecordBatch::try_from_iter([
            ("ts", utc),
            ("local_ts", naive),
        ])
        .unwrap();
        ctx.register_batch("events", batch).unwrap();
    }

    const QUERY: &str = "SELECT CAST(ts AS DATE), CAST(local_ts AS DATE) AS day, \
        count(*) OVER (PARTITION BY CAST(ts AS DATE)) AS same_day \
        FROM events ORDER BY CAST(ts AS DATE) NULLS LAST";

    #[tokio::test]
    async fn casts_are_planned_as_utc_date_with_the_same_names_and_days() {
        let mut results = Vec::new();
        for rewrite in [false, true] {
            let ctx = session(rewrite);
            register(&ctx);
            let df = ctx.sql(QUERY).await.unwrap();
            let plan = df.clone().into_optimized_plan().unwrap();
            let shown = plan.display_indent().to_string();
            assert_eq!(shown.contains("utc_date("), rewrite, "{shown}");
            let batches = df.collect().await.unwrap();
            results.push(pretty_format_batches(&batches).unwrap().to_string());
        }
        assert_eq!(results[0], results[1]);
        let expected = [
            "+------------+------------+----------+",
            "| events.ts  | day        | same_day |",
            "+------------+------------+----------+",
            "| 1969-12-31 | 1969-12-31 | 1        |",
            "| 1970-01-01 | 1970-01-01 | 2        |",
            "| 1970-01-01 | 1970-01-01 | 2        |",
            "| 2000-02-29 | 2000-02-29 | 1        |",
            "| 2026-06-30 | 2026-06-30 | 1        |",
            "|            |            | 1        |",
            "+------------+------------+----------+",
        ];
        assert_eq!(
            results[1].lines().collect::<Vec<_>>(),
            expected,
            "{}",
            results[1]
        );
    }

    #[test]
    fn zoned_timestamps_and_out_of_range_days_are_left_to_the_cast() {
        let berlin = TimestampMicrosecondArray::from(vec![Some(0)]).with_timezone("Europe/Berlin");
        assert!(utc_days(&berlin).is_none());
        let far = TimestampSecondArray::from(vec![Some(i64::MAX)]);
        assert!(utc_days(&far).is_none());
        let ok = TimestampSecondArray::from(vec![Some(-1), Some(86_400)]);
        assert_eq!(utc_days(&ok).unwrap().values().to_vec(), [-1, 1]);
        // Dates too: a day beyond chrono's is not one.
        let far_date = Date32Array::from(vec![Some(0), Some(i32::MAX)]);
        assert!(utc_days(&far_date).is_none());
        let dates = Date32Array::from(vec![Some(-1), None, Some(19_000)]);
        assert_eq!(utc_days(&dates).unwrap(), dates);
    }
}
