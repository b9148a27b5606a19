//! `date_part` (and `extract`) with a fast path for the year, month and day of a date or a UTC
//! timestamp.
//!
//! DataFusion 55 goes through arrow's `date_part`, which builds a chrono date for every value and,
//! for a timestamp with a zone, looks the zone up each time: cohort_retention's month index
//! (`extract(year FROM order_ts) * 12 + extract(month FROM order_ts)`) and churn_rate's month of
//! a churn day spent 3% of their CPU there at 10M orders. The fast path takes the civil date from
//! the day number (engine::utc_date); every other part, type, time zone, scalar or a day outside
//! chrono's range goes to DataFusion's own `date_part` (engine::fast_path: same name, aliases,
//! signature, result type and pruning preimage). `extract` is planned as it too
//! (`ExtractPlanner`): DataFusion's own planner calls its built-in function, past the registry.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array};
use datafusion::common::Result;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult};
use datafusion::logical_expr::{ColumnarValue, Expr, ScalarUDF};

use crate::engine::fast_path::WithFastPath;
use crate::engine::utc_date::{civil_from_days, utc_days};

/// The parts the fast path computes.
#[derive(Clone, Copy)]
enum Part {
    Year,
    Month,
    Day,
}

/// The fast path's result, or `None` when the arguments are not ones it computes.
fn fast(args: &[ColumnarValue]) -> Option<ArrayRef> {
    let [ColumnarValue::Scalar(part), ColumnarValue::Array(values)] = args else {
        return None;
    };
    let part = match part.try_as_str().flatten()?.to_ascii_lowercase().as_str() {
        "year" => Part::Year,
        "month" => Part::Month,
        "day" => Part::Day,
        _ => return None,
    };
    // A day beyond chrono's is DataFusion's to answer.
    let days = utc_days(values.as_ref())?;
    let parts: Int32Array = days.unary(|day| {
        let (year, month, day_of_month) = civil_from_days(i64::from(day));
        match part {
            // Within chrono's days, a year fits an i32.
            Part::Year => year as i32,
            Part::Month => month as i32,
            Part::Day => day_of_month as i32,
        }
    });
    Some(Arc::new(parts))
}

/// `date_part` as retention's sessions have it.
pub fn udf() -> ScalarUDF {
    WithFastPath::udf(datafusion::functions::datetime::date_part(), fast)
}

/// Plans `extract(part FROM value)` as retention's `date_part`; a session puts it before
/// DataFusion's planners, whose `extract` is the built-in function.
#[derive(Debug)]
pub struct ExtractPlanner {
    udf: Arc<ScalarUDF>,
}

impl Default for ExtractPlanner {
    fn default() -> Self {
        ExtractPlanner {
            udf: Arc::new(udf()),
        }
    }
}

impl ExprPlanner for ExtractPlanner {
    fn plan_extract(&self, args: Vec<Expr>) -> Result<PlannerResult<Vec<Expr>>> {
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(self.udf.clone(), args),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        AsArray, Date32Array, TimestampMicrosecondArray, TimestampSecondArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type};
    use datafusion::common::ScalarValue;
    use datafusion::config::ConfigOptions;
    use datafusion::logical_expr::ScalarFunctionArgs;

    fn part(name: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(name.into())))
    }

    fn call(udf: &ScalarUDF, name: &str, values: &ArrayRef) -> Vec<Option<i32>> {
        let args = ScalarFunctionArgs {
            args: vec![part(name), ColumnarValue::Array(values.clone())],
            arg_fields: vec![
                Arc::new(Field::new("p", DataType::Utf8, false)),
                Arc::new(Field::new("v", values.data_type().clone(), true)),
            ],
            number_rows: values.len(),
            return_field: Arc::new(Field::new("r", DataType::Int32, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let out = udf
            .invoke_with_args(args)
            .unwrap()
            .into_array(values.len())
            .unwrap();
        out.as_primitive::<Int32Type>().iter().collect()
    }

    #[test]
    fn years_months_and_days_are_datafusions_own() {
        let ours = udf();
        let theirs = datafusion::functions::datetime::date_part();
        // Every day from 1899-12-25 to 2101-01-05 (leap days, centuries, before 1970) and a null,
        // as dates, as UTC microseconds a microsecond before midnight, and as zoneless seconds.
        let days: Vec<Option<i32>> = (-25_575..47_500).map(Some).chain([None]).collect();
        let dates: ArrayRef = Arc::new(Date32Array::from(days.clone()));
        let micros: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(
                days.iter()
                    .map(|d| d.map(|d| i64::from(d) * 86_400_000_000 + 86_399_999_999))
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        );
        let seconds: ArrayRef = Arc::new(TimestampSecondArray::from(
            days.iter()
                .map(|d| d.map(|d| i64::from(d) * 86_400))
                .collect::<Vec<_>>(),
        ));
        for values in [&dates, &micros, &seconds] {
            for name in ["year", "MONTH", "day"] {
                assert!(fast(&[part(name), ColumnarValue::Array(values.clone())]).is_some());
                assert_eq!(
                    call(&ours, name, values),
                    call(&theirs, name, values),
                    "{name} of {}",
                    values.data_type()
                );
            }
        }
        let leap: ArrayRef = Arc::new(Date32Array::from(vec![Some(11_016), None, Some(-1)]));
        assert_eq!(call(&ours, "year", &leap), [Some(2000), None, Some(1969)]);
        assert_eq!(call(&ours, "month", &leap), [Some(2), None, Some(12)]);
        assert_eq!(call(&ours, "day", &leap), [Some(29), None, Some(31)]);
    }

    #[test]
    fn other_parts_and_zones_are_left_to_datafusion() {
        let berlin: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(82_800_000_000)])
                .with_timezone("Europe/Berlin"),
        );
        assert!(fast(&[part("day"), ColumnarValue::Array(berlin.clone())]).is_none());
        // 1970-01-01T23:00Z is the 2nd in Berlin.
        assert_eq!(call(&udf(), "day", &berlin), [Some(2)]);
        let utc: ArrayRef = Arc::new(TimestampSecondArray::from(vec![Some(3_600)]));
        assert!(fast(&[part("hour"), ColumnarValue::Array(utc.clone())]).is_none());
        assert_eq!(call(&udf(), "hour", &utc), [Some(1)]);
        let far: ArrayRef = Arc::new(Date32Array::from(vec![Some(0), Some(i32::MAX)]));
        assert!(fast(&[part("year"), ColumnarValue::Array(far)]).is_none());
    }
}
