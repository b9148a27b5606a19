//! SQL functions retention adds to every session: exact money rounding for finance jobs.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Decimal128Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// `round_half_even(x)`: a decimal rounded to cents (2 decimals), ties to the even cent
/// (banker's rounding), computed on the exact integer value. `round_half_even(0.125) = 0.12`,
/// `round_half_even(0.135) = 0.14`, `round_half_even(-0.125) = -0.12`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RoundHalfEven {
    signature: Signature,
}

impl Default for RoundHalfEven {
    fn default() -> Self {
        RoundHalfEven {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

/// Target scale of `round_half_even`.
const CENTS: i8 = 2;

/// Round an unscaled decimal value from `scale` to `CENTS`, ties to even.
pub fn half_even_to_cents(value: i128, scale: i8) -> i128 {
    if scale <= CENTS {
        return value * 10i128.pow((CENTS - scale) as u32);
    }
    let divisor = 10i128.pow((scale - CENTS) as u32);
    let quotient = value.div_euclid(divisor);
    let remainder = value.rem_euclid(divisor);
    let twice = remainder * 2;
    if twice > divisor || (twice == divisor && quotient % 2 != 0) {
        quotient + 1
    } else {
        quotient
    }
}

impl ScalarUDFImpl for RoundHalfEven {
    fn name(&self) -> &str {
        "round_half_even"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [DataType::Decimal128(p, s)] => {
                let integer_digits = (*p as i16 - *s as i16).max(1);
                Ok(DataType::Decimal128(
                    (integer_digits + CENTS as i16 + 1).min(38) as u8,
                    CENTS,
                ))
            }
            other => plan_err!("round_half_even expects one decimal argument, got {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Decimal128(p, s) = args.arg_fields[0].data_type().clone() else {
            return exec_err!("round_half_even expects a decimal");
        };
        let DataType::Decimal128(out_p, out_s) = self.return_type(&[DataType::Decimal128(p, s)])?
        else {
            unreachable!("decimal in, decimal out")
        };
        match &args.args[0] {
            ColumnarValue::Scalar(ScalarValue::Decimal128(v, _, _)) => Ok(ColumnarValue::Scalar(
                ScalarValue::Decimal128(v.map(|v| half_even_to_cents(v, s)), out_p, out_s),
            )),
            ColumnarValue::Array(array) => {
                let input = array
                    .as_any()
                    .downcast_ref::<Decimal128Array>()
                    .expect("decimal array");
                let out: Decimal128Array = input
                    .iter()
                    .map(|v| v.map(|v| half_even_to_cents(v, s)))
                    .collect();
                let out = out.with_precision_and_scale(out_p, out_s)?;
                Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
            }
            other => exec_err!("round_half_even: unexpected argument {other:?}"),
        }
    }
}

/// Every function retention registers.
pub fn all() -> Vec<ScalarUDF> {
    vec![ScalarUDF::from(RoundHalfEven::default())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_even_cent() {
        // 0.125 -> 0.12, 0.135 -> 0.14, 0.1251 -> 0.13, -0.125 -> -0.12, -0.135 -> -0.14
        assert_eq!(half_even_to_cents(125, 3), 12);
        assert_eq!(half_even_to_cents(135, 3), 14);
        assert_eq!(half_even_to_cents(1251, 4), 13);
        assert_eq!(half_even_to_cents(-125, 3), -12);
        assert_eq!(half_even_to_cents(-135, 3), -14);
        assert_eq!(half_even_to_cents(-126, 3), -13);
        assert_eq!(half_even_to_cents(7, 0), 700);
        // 10.00 EUR at 1.08123456 = 10.8123456000 -> 10.81
        assert_eq!(half_even_to_cents(1000 * 108123456, 10), 1081);
    }

    #[tokio::test]
    async fn works_in_sql() {
        let ctx = datafusion::prelude::SessionContext::new();
        for f in all() {
            ctx.register_udf(f);
        }
        let batches = ctx
            .sql("SELECT round_half_even(CAST(x AS DECIMAL(18,2)) * CAST(r AS DECIMAL(18,8))) AS v FROM (VALUES (0.25, 0.5), (0.35, 0.5), (10.00, 1.08123456)) t(x, r)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let v = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        // 0.125 -> 0.12, 0.175 -> 0.18, 10.8123456 -> 10.81
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            vec![Some(12), Some(18), Some(1081)]
        );
        assert_eq!(v.scale(), 2);
    }
}
