//! `to_char` with a fast path for the two formats the marts group by: `'%Y-%m'` (a month) and
//! `'%Y-%m-%d'` (a day), of a date or a UTC timestamp.
//!
//! DataFusion 55 formats every value through chrono's formatter: `to_char(session_ts, '%Y-%m')`
//! was 0.8 s of journey_funnel's compute over 2.6M sessions. The fast path computes the civil
//! date from the day number and writes the digits; every other format, type, time zone or a year
//! outside 0..=9999 goes to DataFusion's own `to_char` (engine::fast_path).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringBuilder};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF};

use crate::engine::fast_path::WithFastPath;

/// The formats the fast path writes.
#[derive(Clone, Copy)]
enum Format {
    Month,
    Day,
}

/// The fast path's result, or `None` when the arguments are not ones it writes.
fn fast(args: &[ColumnarValue]) -> Option<ArrayRef> {
    let [
        ColumnarValue::Array(values),
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(format))),
    ] = args
    else {
        return None;
    };
    let format = match format.as_str() {
        "%Y-%m" => Format::Month,
        "%Y-%m-%d" => Format::Day,
        _ => return None,
    };
    let days = crate::engine::utc_date::utc_days(values.as_ref())?;
    let width = match format {
        Format::Month => 7,
        Format::Day => 10,
    };
    let mut out = StringBuilder::with_capacity(days.len(), days.len() * width);
    let mut text = String::with_capacity(width);
    // Rows come mostly day by day: a day's text is written once for its run of rows.
    let mut written_day = None;
    for day in &days {
        let Some(day) = day else {
            out.append_null();
            continue;
        };
        if written_day == Some(day) {
            out.append_value(&text);
            continue;
        }
        written_day = Some(day);
        let (year, month, day_of_month) = crate::engine::utc_date::civil_from_days(i64::from(day));
        if !(0..=9999).contains(&year) {
            return None;
        }
        text.clear();
        push_digits(&mut text, year as u32, 4);
        text.push('-');
        push_digits(&mut text, month, 2);
        if let Format::Day = format {
            text.push('-');
            push_digits(&mut text, day_of_month, 2);
        }
        out.append_value(&text);
    }
    Some(Arc::new(out.finish()))
}

/// `digits` decimal digits of `n`, zero-padded.
fn push_digits(text: &mut String, n: u32, digits: u32) {
    for place in (0..digits).rev() {
        let digit = (n / 10u32.pow(place)) % 10;
        text.push(char::from(b'0' + digit as u8));
    }
}

/// `to_char` as retention's sessions have it.
pub fn udf() -> ScalarUDF {
    WithFastPath::udf(datafusion::functions::datetime::to_char(), fast)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        AsArray, Date32Array, TimestampMillisecondArray, TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::config::ConfigOptions;
    use datafusion::logical_expr::ScalarFunctionArgs;

    fn call(udf: &ScalarUDF, values: ArrayRef, format: &str) -> ArrayRef {
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Array(values.clone()),
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(format.into()))),
            ],
            arg_fields: vec![
                Arc::new(Field::new("v", values.data_type().clone(), true)),
                Arc::new(Field::new("f", DataType::Utf8, true)),
            ],
            number_rows: values.len(),
            return_field: Arc::new(Field::new("r", DataType::Utf8, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        udf.invoke_with_args(args)
            .unwrap()
            .into_array(values.len())
            .unwrap()
    }

    fn texts(a: &ArrayRef) -> Vec<Option<String>> {
        a.as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()
    }

    #[test]
    fn days_and_months_are_written_as_datafusion_writes_them() {
        let ours = udf();
        let theirs = datafusion::functions::datetime::to_char();
        // Every day from 1899-12-25 to 2101-01-05, leap days and centuries included, and a null.
        let days: Vec<Option<i32>> = (-25_575..47_500).map(Some).chain([None]).collect();
        let dates: ArrayRef = Arc::new(Date32Array::from(days.clone()));
        let nanos: ArrayRef = Arc::new(
            TimestampNanosecondArray::from(
                days.iter()
                    .map(|d| d.map(|d| i64::from(d) * 86_400_000_000_000 + 86_399_999_999_999))
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        );
        let millis: ArrayRef = Arc::new(TimestampMillisecondArray::from(
            days.iter()
                .map(|d| d.map(|d| i64::from(d) * 86_400_000 - 1))
                .collect::<Vec<_>>(),
        ));
        for values in [dates, nanos, millis] {
            for format in ["%Y-%m", "%Y-%m-%d"] {
                let fast = fast(&[
                    ColumnarValue::Array(values.clone()),
                    ColumnarValue::Scalar(ScalarValue::Utf8(Some(format.into()))),
                ]);
                assert!(fast.is_some(), "{format} {}", values.data_type());
                assert_eq!(
                    texts(&call(&ours, values.clone(), format)),
                    texts(&call(&theirs, values.clone(), format)),
                    "{format} {}",
                    values.data_type()
                );
            }
        }
        // A day repeated, around a null, is written again for each row.
        let leap: ArrayRef = Arc::new(Date32Array::from(vec![
            Some(11_016),
            Some(11_016),
            None,
            Some(11_016),
            Some(11_017),
        ]));
        let (feb, mar) = (
            Some("2000-02-29".to_string()),
            Some("2000-03-01".to_string()),
        );
        assert_eq!(
            texts(&call(&ours, leap, "%Y-%m-%d")),
            [feb.clone(), feb.clone(), None, feb, mar]
        );
    }

    #[test]
    fn other_formats_zones_and_types_go_to_datafusion() {
        let ours = udf();
        let theirs = datafusion::functions::datetime::to_char();
        let berlin: ArrayRef = Arc::new(
            TimestampNanosecondArray::from(vec![Some(1_767_222_000_000_000_000)])
                .with_timezone("Europe/Berlin"),
        );
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![Some(20_454), None]));
        let far: ArrayRef = Arc::new(Date32Array::from(vec![Some(3_000_000)]));
        for (values, format) in [
            (berlin, "%Y-%m"),
            (dates, "%d/%m/%Y"),
            (far.clone(), "%Y-%m"),
        ] {
            assert_eq!(
                texts(&call(&ours, values.clone(), format)),
                texts(&call(&theirs, values.clone(), format)),
                "{format}"
            );
        }
        assert!(
            fast(&[
                ColumnarValue::Array(far),
                ColumnarValue::Scalar(ScalarValue::Utf8(Some("%Y-%m".into())))
            ])
            .is_none(),
            "a year past 9999 goes to DataFusion"
        );
    }
}
