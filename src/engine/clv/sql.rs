//! The CLV models as SQL functions, registered in every session. Aggregates fit a model and
//! return its parameters as a struct: `bgnbd_fit(frequency, recency, t)` and
//! `gamma_gamma_fit(frequency, monetary_value)`. Scalars score one customer from the parameters:
//! `bgnbd_p_alive`, `bgnbd_expected_purchases`, `bgnbd_expected_purchases_new`,
//! `gamma_gamma_expected_value` and `clv`. Times are in one unit (days or weeks, as the caller
//! gives them; `alpha` comes out in it); money comes back as DECIMAL(18,2), rounded half-even.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, ListArray,
    StructArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

use crate::engine::clv::bgnbd::{BgNbd, History};
use crate::engine::clv::fit::{FitError, Fitted, fit_bgnbd, fit_gamma_gamma};
use crate::engine::clv::gamma_gamma::GammaGamma;

/// Days per month, for horizons in months (365.25 / 12).
pub const DAYS_PER_MONTH: f64 = 30.4375;

/// Every CLV aggregate.
pub fn aggregates() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(ModelFit::new(Model::BgNbd)),
        AggregateUDF::from(ModelFit::new(Model::GammaGamma)),
    ]
}

/// Every CLV scalar function.
pub fn scalars() -> Vec<ScalarUDF> {
    Scoring::ALL
        .iter()
        .map(|s| ScalarUDF::from(ScoringUdf::new(*s)))
        .collect()
}

/// The signature of every CLV function: `n` numbers, taken as Float64.
fn numbers(n: usize) -> Signature {
    Signature::uniform(n, vec![DataType::Float64], Volatility::Immutable)
}

// --- Aggregates -------------------------------------------------------------------------------

/// Which model an aggregate fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Model {
    BgNbd,
    GammaGamma,
}

impl Model {
    fn name(self) -> &'static str {
        match self {
            Model::BgNbd => "bgnbd_fit",
            Model::GammaGamma => "gamma_gamma_fit",
        }
    }

    /// Inputs per customer.
    fn arity(self) -> usize {
        match self {
            Model::BgNbd => 3,
            Model::GammaGamma => 2,
        }
    }

    fn parameters(self) -> &'static [&'static str] {
        match self {
            Model::BgNbd => &["r", "alpha", "a", "b"],
            Model::GammaGamma => &["p", "q", "gamma"],
        }
    }

    /// The struct the fit returns: the parameters, then how the fit went.
    fn result_fields(self) -> Fields {
        let mut fields: Vec<Field> = self
            .parameters()
            .iter()
            .map(|p| Field::new(*p, DataType::Float64, true))
            .collect();
        fields.extend(
            self.parameters()
                .iter()
                .map(|p| Field::new(format!("{p}_se"), DataType::Float64, true)),
        );
        fields.extend([
            Field::new("log_likelihood", DataType::Float64, true),
            Field::new("customers", DataType::Int64, false),
            Field::new("converged", DataType::Boolean, false),
            Field::new("iterations", DataType::Int64, false),
        ]);
        Fields::from(fields)
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ModelFit {
    model: Model,
    signature: Signature,
}

impl ModelFit {
    fn new(model: Model) -> ModelFit {
        ModelFit {
            model,
            signature: numbers(model.arity()),
        }
    }
}

impl AggregateUDFImpl for ModelFit {
    fn name(&self) -> &str {
        self.model.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.model.result_fields()))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Histories {
            model: self.model,
            counts: BTreeMap::new(),
        }))
    }

    fn state_fields(&self, _args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |name: &str| {
            Arc::new(Field::new(
                name,
                DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
                true,
            ))
        };
        let mut fields: Vec<FieldRef> = (0..self.model.arity())
            .map(|i| list(&format!("input_{i}")))
            .collect();
        fields.push(list("count"));
        Ok(fields)
    }
}

/// Distinct inputs with their counts: the fit is exact on them and sees far fewer rows.
#[derive(Debug)]
struct Histories {
    model: Model,
    counts: BTreeMap<Vec<u64>, f64>,
}

impl Histories {
    fn add(&mut self, row: Vec<f64>, count: f64) {
        let key = row.iter().map(|v| v.to_bits()).collect();
        *self.counts.entry(key).or_insert(0.0) += count;
    }

    fn rows(&self) -> impl Iterator<Item = (Vec<f64>, f64)> + '_ {
        self.counts
            .iter()
            .map(|(k, c)| (k.iter().map(|b| f64::from_bits(*b)).collect(), *c))
    }
}

fn float_columns(values: &[ArrayRef]) -> Result<Vec<Float64Array>> {
    values
        .iter()
        .map(|v| {
            Ok(cast(v, &DataType::Float64)?
                .as_primitive::<Float64Type>()
                .clone())
        })
        .collect()
}

impl Accumulator for Histories {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let cols = float_columns(values)?;
        for i in 0..cols[0].len() {
            // A customer with any NULL input is left out.
            if cols.iter().all(|c| c.is_valid(i)) {
                self.add(cols.iter().map(|c| c.value(i)).collect(), 1.0);
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); self.model.arity() + 1];
        for (row, count) in self.rows() {
            for (i, v) in row.into_iter().chain([count]).enumerate() {
                columns[i].push(v);
            }
        }
        Ok(columns
            .into_iter()
            .map(|c| {
                let values: Vec<ScalarValue> = c.into_iter().map(ScalarValue::from).collect();
                ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Float64))
            })
            .collect())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists: Vec<&ListArray> = states.iter().map(|s| s.as_list::<i32>()).collect();
        for row in 0..lists[0].len() {
            let cols: Vec<ArrayRef> = lists.iter().map(|l| l.value(row)).collect();
            let cols = float_columns(&cols)?;
            let arity = self.model.arity();
            for i in 0..cols[0].len() {
                let inputs = (0..arity).map(|c| cols[c].value(i)).collect();
                self.add(inputs, cols[arity].value(i));
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let (params, fitted) = match self.model {
            Model::BgNbd => {
                let data: Vec<(History, f64)> = self
                    .rows()
                    .map(|(r, c)| {
                        (
                            History {
                                x: r[0],
                                t_x: r[1],
                                t: r[2],
                            },
                            c,
                        )
                    })
                    .collect();
                outcome(fit_bgnbd(&data), |m: &BgNbd| vec![m.r, m.alpha, m.a, m.b])?
            }
            Model::GammaGamma => {
                let data: Vec<(f64, f64, f64)> = self
                    .rows()
                    .filter(|(r, _)| r[0] > 0.0 && r[1] > 0.0)
                    .map(|(r, c)| (r[0], r[1], c))
                    .collect();
                outcome(fit_gamma_gamma(&data), |m: &GammaGamma| {
                    vec![m.p, m.q, m.gamma]
                })?
            }
        };
        let customers = match &fitted {
            Some(f) => f.customers,
            None => self.counts.values().sum(),
        };
        result_struct(self.model, params, fitted, customers)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.counts.len() * (8 * (self.model.arity() + 1) + 48)
    }
}

/// How a fit went, in the result struct's terms.
#[derive(Debug, Clone)]
struct FitSummary {
    standard_errors: Option<Vec<f64>>,
    log_likelihood: f64,
    customers: f64,
    converged: bool,
    iterations: u64,
}

/// Parameters and summary of a fit; no parameters (NULLs in the struct, `converged = false`)
/// when there is nothing to fit on or the data cannot identify the model. Bad input is an error.
fn outcome<P>(
    fit: std::result::Result<Fitted<P>, FitError>,
    params: impl Fn(&P) -> Vec<f64>,
) -> Result<(Option<Vec<f64>>, Option<FitSummary>)> {
    match fit {
        Ok(f) => Ok((
            Some(params(&f.params)),
            Some(FitSummary {
                standard_errors: f.standard_errors,
                log_likelihood: f.log_likelihood,
                customers: f.customers,
                converged: f.converged,
                iterations: f.iterations,
            }),
        )),
        Err(FitError::Empty | FitError::Degenerate(_)) => Ok((None, None)),
        Err(FitError::BadInput(m)) => exec_err!("{m}"),
    }
}

fn result_struct(
    model: Model,
    params: Option<Vec<f64>>,
    fitted: Option<FitSummary>,
    customers: f64,
) -> Result<ScalarValue> {
    let n = model.parameters().len();
    let value = |i: usize| -> ArrayRef {
        Arc::new(Float64Array::from(vec![params.as_ref().map(|p| p[i])]))
    };
    let mut columns: Vec<ArrayRef> = (0..n).map(value).collect();
    let se = fitted.as_ref().and_then(|f| f.standard_errors.as_ref());
    columns.extend(
        (0..n).map(|i| -> ArrayRef { Arc::new(Float64Array::from(vec![se.map(|s| s[i])])) }),
    );
    columns.push(Arc::new(Float64Array::from(vec![
        fitted.as_ref().map(|f| f.log_likelihood),
    ])));
    columns.push(Arc::new(Int64Array::from(vec![customers as i64])));
    columns.push(Arc::new(BooleanArray::from(vec![
        fitted.as_ref().is_some_and(|f| f.converged),
    ])));
    columns.push(Arc::new(Int64Array::from(vec![
        fitted.as_ref().map_or(0, |f| f.iterations as i64),
    ])));
    let array = StructArray::try_new(model.result_fields(), columns, None)?;
    Ok(ScalarValue::Struct(Arc::new(array)))
}

// --- Scalars ----------------------------------------------------------------------------------

/// One scoring function: its name, its arguments, and whether it returns money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scoring {
    PAlive,
    ExpectedPurchases,
    ExpectedPurchasesNew,
    ExpectedValue,
    DiscountedPurchases,
    Clv,
}

impl Scoring {
    const ALL: [Scoring; 6] = [
        Scoring::PAlive,
        Scoring::ExpectedPurchases,
        Scoring::ExpectedPurchasesNew,
        Scoring::ExpectedValue,
        Scoring::DiscountedPurchases,
        Scoring::Clv,
    ];

    fn name(self) -> &'static str {
        match self {
            Scoring::PAlive => "bgnbd_p_alive",
            Scoring::ExpectedPurchases => "bgnbd_expected_purchases",
            Scoring::ExpectedPurchasesNew => "bgnbd_expected_purchases_new",
            Scoring::ExpectedValue => "gamma_gamma_expected_value",
            Scoring::DiscountedPurchases => "bgnbd_discounted_purchases",
            Scoring::Clv => "clv",
        }
    }

    /// The arguments, in order (all numbers).
    fn arguments(self) -> Vec<&'static str> {
        // The BG/NBD parameters, then one customer's history.
        const BG: [&str; 4] = ["r", "alpha", "a", "b"];
        const HISTORY: [&str; 3] = ["frequency", "recency", "t"];
        const DISCOUNTING: [&str; 3] = ["months", "monthly_discount_rate", "units_per_month"];
        match self {
            Scoring::PAlive => [&BG[..], &HISTORY].concat(),
            Scoring::ExpectedPurchases => [&BG[..], &HISTORY, &["horizon"]].concat(),
            Scoring::ExpectedPurchasesNew => [&BG[..], &["horizon"]].concat(),
            Scoring::ExpectedValue => vec!["p", "q", "gamma", "frequency", "monetary_value"],
            Scoring::DiscountedPurchases => [&BG[..], &HISTORY, &DISCOUNTING].concat(),
            Scoring::Clv => [
                &BG[..],
                &["p", "q", "gamma"],
                &HISTORY,
                &["monetary_value", "months", "margin"],
                &DISCOUNTING[1..],
            ]
            .concat(),
        }
    }

    fn returns_money(self) -> bool {
        matches!(self, Scoring::ExpectedValue | Scoring::Clv)
    }

    /// The value for one row of arguments; `None` when the model gives none (NULL).
    fn score(self, v: &[f64]) -> Option<f64> {
        let bg = |v: &[f64]| BgNbd {
            r: v[0],
            alpha: v[1],
            a: v[2],
            b: v[3],
        };
        // (frequency, recency, t) after the four BG/NBD parameters; None when invalid.
        let history = || {
            let h = History {
                x: v[4],
                t_x: v[5],
                t: v[6],
            };
            h.check().ok().map(|()| h)
        };
        match self {
            Scoring::PAlive => Some(bg(v).p_alive(&history()?)),
            Scoring::ExpectedPurchases => bg(v).expected_purchases(&history()?, v[7]),
            Scoring::ExpectedPurchasesNew => bg(v).expected_purchases_new(v[4]),
            Scoring::ExpectedValue => GammaGamma {
                p: v[0],
                q: v[1],
                gamma: v[2],
            }
            .expected_value(v[3], v[4]),
            Scoring::DiscountedPurchases => {
                discounted_purchases(&bg(v), &history()?, v[7], v[8], v[9])
            }
            Scoring::Clv => clv(v),
        }
    }
}

/// Σ over months m = 1..`months` of the purchases expected in month m, discounted at the
/// monthly rate: E[Y(m)] − E[Y(m − 1)] over (1 + rate)^m, with months of `per_month` time units.
fn discounted_purchases(
    model: &BgNbd,
    h: &History,
    months: f64,
    rate: f64,
    per_month: f64,
) -> Option<f64> {
    if !(months >= 0.0 && per_month > 0.0 && rate > -1.0) {
        return None;
    }
    let mut total = 0.0;
    let mut before = 0.0;
    for month in 1..=(months.round() as i64) {
        let upto = model.expected_purchases(h, month as f64 * per_month)?;
        total += (upto - before) / (1.0 + rate).powi(month as i32);
        before = upto;
    }
    Some(total)
}

/// Discounted CLV over `months`: margin x expected value per purchase x the discounted
/// purchases expected month by month.
fn clv(v: &[f64]) -> Option<f64> {
    let model = BgNbd {
        r: v[0],
        alpha: v[1],
        a: v[2],
        b: v[3],
    };
    let spend = GammaGamma {
        p: v[4],
        q: v[5],
        gamma: v[6],
    };
    let h = History {
        x: v[7],
        t_x: v[8],
        t: v[9],
    };
    h.check().ok()?;
    let (m, months, margin, rate, per_month) = (v[10], v[11], v[12], v[13], v[14]);
    let value = spend.expected_value(h.x, if h.x > 0.0 { m } else { 0.0 })?;
    Some(margin * value * discounted_purchases(&model, &h, months, rate, per_month)?)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ScoringUdf {
    scoring: Scoring,
    signature: Signature,
}

impl ScoringUdf {
    fn new(scoring: Scoring) -> ScoringUdf {
        ScoringUdf {
            scoring,
            signature: numbers(scoring.arguments().len()),
        }
    }
}

impl ScalarUDFImpl for ScoringUdf {
    fn name(&self) -> &str {
        self.scoring.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.len() != self.scoring.arguments().len() {
            return plan_err!(
                "{} takes ({})",
                self.scoring.name(),
                self.scoring.arguments().join(", ")
            );
        }
        Ok(if self.scoring.returns_money() {
            DataType::Decimal128(18, 2)
        } else {
            DataType::Float64
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let cols = float_columns(&arrays)?;
        let rows = args.number_rows;
        let values: Vec<Option<f64>> = (0..rows)
            .map(|i| {
                if cols.iter().any(|c| c.is_null(i)) {
                    return None;
                }
                let row: Vec<f64> = cols.iter().map(|c| c.value(i)).collect();
                self.scoring.score(&row).filter(|v| v.is_finite())
            })
            .collect();
        let out: ArrayRef = if self.scoring.returns_money() {
            let cents: Decimal128Array = values
                .into_iter()
                .map(|v| v.map(|v| (v * 100.0).round_ties_even() as i128))
                .collect();
            Arc::new(cents.with_precision_and_scale(18, 2)?)
        } else {
            Arc::new(Float64Array::from(values))
        };
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use crate::engine::clv::fit::tests::simulate;

    /// Fader, Hardie & Lee's CDNOW parameters (weeks) and their example customer.
    const PAPER: BgNbd = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    const PAPER_CUSTOMER: History = History {
        x: 2.0,
        t_x: 30.43,
        t: 38.86,
    };

    const TRUTH: BgNbd = BgNbd {
        r: 0.6,
        alpha: 5.0,
        a: 0.8,
        b: 2.5,
    };

    /// `h(x, t_x, t, m)` in `parts` partitions, with retention's CLV functions.
    fn session(rows: &[(f64, f64, f64, f64)], parts: usize) -> SessionContext {
        let ctx = SessionContext::new();
        for f in scalars() {
            ctx.register_udf(f);
        }
        for f in aggregates() {
            ctx.register_udaf(f);
        }
        let schema = Arc::new(Schema::new(
            ["x", "t_x", "t", "m"]
                .iter()
                .map(|n| Field::new(*n, DataType::Float64, true))
                .collect::<Vec<_>>(),
        ));
        let chunk = rows.len().div_ceil(parts.max(1)).max(1);
        let partitions: Vec<Vec<RecordBatch>> = rows
            .chunks(chunk)
            .map(|c| {
                let col = |f: fn(&(f64, f64, f64, f64)) -> f64| -> ArrayRef {
                    Arc::new(Float64Array::from(c.iter().map(f).collect::<Vec<_>>()))
                };
                vec![
                    RecordBatch::try_new(
                        schema.clone(),
                        vec![col(|r| r.0), col(|r| r.1), col(|r| r.2), col(|r| r.3)],
                    )
                    .unwrap(),
                ]
            })
            .collect();
        let partitions = if partitions.is_empty() {
            vec![vec![]]
        } else {
            partitions
        };
        ctx.register_table(
            "h",
            Arc::new(MemTable::try_new(schema, partitions).unwrap()),
        )
        .unwrap();
        ctx
    }

    async fn one_row(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let b = b.iter().find(|b| b.num_rows() > 0).unwrap();
        (0..b.num_columns())
            .map(|c| {
                datafusion::arrow::util::display::array_value_to_string(b.column(c), 0).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn the_fit_in_sql_is_the_fit_over_partitions() {
        let data = simulate(&TRUTH, 4_000, 40.0, 5);
        let rows: Vec<_> = data.iter().map(|(h, _)| (h.x, h.t_x, h.t, 0.0)).collect();
        let direct = fit_bgnbd(&data).unwrap();
        let ctx = session(&rows, 4);
        let got = one_row(
            &ctx,
            "SELECT f.r, f.alpha, f.a, f.b, f.log_likelihood, f.customers, f.converged
             FROM (SELECT bgnbd_fit(x, t_x, t) AS f FROM h)",
        )
        .await;
        let p = direct.params;
        let num = |s: &str| s.parse::<f64>().unwrap();
        for (i, want) in [p.r, p.alpha, p.a, p.b, direct.log_likelihood]
            .into_iter()
            .enumerate()
        {
            assert!((num(&got[i]) - want).abs() <= 1e-9 * want.abs(), "{got:?}");
        }
        assert_eq!(got[5..], ["4000".to_string(), "true".to_string()]);
    }

    #[tokio::test]
    async fn nothing_to_fit_is_a_null_fit_and_bad_input_an_error() {
        let empty = session(&[], 1);
        let got = one_row(
            &empty,
            "SELECT f.r, f.customers, f.converged FROM (SELECT bgnbd_fit(x, t_x, t) AS f FROM h)",
        )
        .await;
        assert_eq!(got, ["", "0", "false"]);
        let nobody_repeats = session(&[(0.0, 0.0, 10.0, 0.0), (0.0, 0.0, 3.0, 0.0)], 1);
        let got = one_row(
            &nobody_repeats,
            "SELECT f.r, f.customers, f.converged FROM (SELECT bgnbd_fit(x, t_x, t) AS f FROM h)",
        )
        .await;
        assert_eq!(got, ["", "2", "false"]);
        let negative = session(&[(1.0, -2.0, 10.0, 0.0)], 1);
        let e = negative
            .sql("SELECT bgnbd_fit(x, t_x, t) FROM h")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("frequency and recency must be >= 0"), "{e}");
    }

    #[tokio::test]
    async fn gamma_gamma_fits_repeat_customers_with_a_positive_mean() {
        let mut rows = Vec::new();
        for i in 0..300 {
            let x = 1.0 + (i % 5) as f64;
            rows.push((x, 1.0, 2.0, 20.0 + (i % 17) as f64 * 3.0));
        }
        let counted = rows.len();
        // Not repeat customers, or no positive mean: left out of the fit.
        rows.extend([
            (0.0, 0.0, 2.0, 50.0),
            (2.0, 1.0, 2.0, 0.0),
            (3.0, 1.0, 2.0, -5.0),
        ]);
        let ctx = session(&rows, 3);
        let got = one_row(
            &ctx,
            "SELECT f.customers, f.converged, f.p > 0 AND f.q > 1 AND f.gamma > 0
             FROM (SELECT gamma_gamma_fit(x, m) AS f FROM h)",
        )
        .await;
        assert_eq!(got, [counted.to_string(), "true".into(), "true".into()]);
    }

    #[tokio::test]
    async fn scoring_functions_match_the_model_and_round_money() {
        let ctx = session(&[(2.0, 30.43, 38.86, 25.0), (0.0, 0.0, 10.0, 0.0)], 1);
        let got = one_row(
            &ctx,
            "SELECT bgnbd_p_alive(0.243, 4.414, 0.793, 2.426, x, t_x, t),
                    round(bgnbd_expected_purchases(0.243, 4.414, 0.793, 2.426, x, t_x, t, 39), 3),
                    gamma_gamma_expected_value(6.25, 3.74, 15.44, x, CAST(m AS DECIMAL(10, 2))),
                    arrow_typeof(clv(0.243, 4.414, 0.793, 2.426, 6.25, 3.74, 15.44, x, t_x, t, m, 12, 0.3, 0.01, 4.348)),
                    bgnbd_p_alive(0.243, 4.414, 0.793, 2.426, x, 40, t)
             FROM h WHERE x = 2",
        )
        .await;
        assert_eq!(
            got[0].parse::<f64>().unwrap(),
            PAPER.p_alive(&PAPER_CUSTOMER)
        );
        assert_eq!(got[1], "1.226");
        // 6.25 * (15.44 + 2 * 25) / (6.25 * 2 + 3.74 - 1) = 26.8434...
        assert_eq!(got[2], "26.84");
        assert_eq!(got[3], "Decimal128(18, 2)");
        // A recency after T is no history: NULL, not garbage.
        assert_eq!(got[4], "");
        let never = one_row(
            &ctx,
            "SELECT bgnbd_p_alive(0.243, 4.414, 0.793, 2.426, x, t_x, t) FROM h WHERE x = 0",
        )
        .await;
        assert_eq!(never, ["1.0"]);
    }

    #[test]
    fn clv_arguments_are_in_the_documented_order() {
        assert_eq!(
            Scoring::Clv.arguments().join(", "),
            "r, alpha, a, b, p, q, gamma, frequency, recency, t, monetary_value, months, margin, \
             monthly_discount_rate, units_per_month"
        );
        assert_eq!(
            Scoring::DiscountedPurchases.arguments().join(", "),
            "r, alpha, a, b, frequency, recency, t, months, monthly_discount_rate, units_per_month"
        );
    }

    #[test]
    fn undiscounted_purchases_telescope_to_the_horizon() {
        // At a 0% rate the monthly increments sum to E[Y(12 months)]; at 1% they are less.
        let whole = PAPER
            .expected_purchases(&PAPER_CUSTOMER, 12.0 * 4.348)
            .unwrap();
        let flat = discounted_purchases(&PAPER, &PAPER_CUSTOMER, 12.0, 0.0, 4.348).unwrap();
        assert!((flat - whole).abs() < 1e-12, "{flat} {whole}");
        let discounted = discounted_purchases(&PAPER, &PAPER_CUSTOMER, 12.0, 0.01, 4.348).unwrap();
        assert!(discounted < whole && discounted > whole / 1.01f64.powi(12));
        assert_eq!(
            discounted_purchases(&PAPER, &PAPER_CUSTOMER, 12.0, -1.0, 4.348),
            None
        );
    }

    #[test]
    fn clv_discounts_each_months_expected_purchases() {
        // One month at 0% and at 10%: margin * value * E[Y(1 month)], then divided by 1.1.
        let v = |rate: f64| {
            clv(&[
                0.243, 4.414, 0.793, 2.426, 6.25, 3.74, 15.44, 2.0, 30.43, 38.86, 25.0, 1.0, 0.3,
                rate, 4.348,
            ])
            .unwrap()
        };
        let value = GammaGamma {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        }
        .expected_value(2.0, 25.0)
        .unwrap();
        let want = 0.3 * value * PAPER.expected_purchases(&PAPER_CUSTOMER, 4.348).unwrap();
        assert!((v(0.0) - want).abs() < 1e-9);
        assert!((v(0.1) - want / 1.1).abs() < 1e-9);
    }
}
