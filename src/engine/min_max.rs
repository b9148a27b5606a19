//! `min` and `max` of strings per group without an allocation per group.
//!
//! DataFusion 55's groups accumulator for the `min` or `max` of a string keeps each group's value
//! in a `Vec<u8>` of its own: at 10M orders, `min(carrier)` per order id took 0.9 s of
//! order_experience's shipments aggregate, and a string min per customer is in cohort_retention.
//! Here a group's value up to 12 bytes (every code the marts group: region, channel, carrier,
//! issue) is kept inline in a fixed slot, and a longer one in one shared buffer. Other types, and
//! `min`/`max` as a window or in a plain accumulator, are DataFusion's own.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, LargeStringArray, StringArray, StringViewArray,
};
use datafusion::arrow::compute::{not, nullif};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator};

use crate::engine::udaf_override::{GroupsOverride, Overridden};

/// `min` and `max`, to register over DataFusion's.
pub fn udafs() -> [AggregateUDF; 2] {
    use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
    [min_udaf(), max_udaf()]
        .map(|inner| AggregateUDF::new_from_impl(Overridden::new(inner, ShortStrings)))
}

/// The groups accumulator of strings replaced; every other input is DataFusion's.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ShortStrings;

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
}

impl GroupsOverride for ShortStrings {
    fn supported(&self, inner: &dyn AggregateUDFImpl, args: AccumulatorArgs) -> bool {
        is_string(args.return_field.data_type()) || inner.groups_accumulator_supported(args)
    }

    fn create(
        &self,
        inner: &dyn AggregateUDFImpl,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let data_type = args.return_field.data_type().clone();
        if !is_string(&data_type) {
            return inner.create_groups_accumulator(args);
        }
        Ok(Box::new(StringMinMax::new(
            inner.name() == "min",
            data_type,
        )))
    }
}

/// A group without a value yet.
const NONE: u32 = u32::MAX;
/// The longest value kept inline.
const INLINE: usize = 12;

/// Each group's least (or greatest) string so far: its length (or [`NONE`]), and its bytes
/// inline when they fit, else the offset of its bytes in `long`.
struct StringMinMax {
    is_min: bool,
    data_type: DataType,
    lens: Vec<u32>,
    slots: Vec<[u8; INLINE]>,
    long: Vec<u8>,
}

impl StringMinMax {
    /// No groups yet; `data_type` is the input's (and the result's) string type.
    fn new(is_min: bool, data_type: DataType) -> Self {
        StringMinMax {
            is_min,
            data_type,
            lens: Vec::new(),
            slots: Vec::new(),
            long: Vec::new(),
        }
    }

    fn value(&self, group: usize) -> Option<&[u8]> {
        let len = self.lens[group];
        if len == NONE {
            return None;
        }
        let len = len as usize;
        let slot = &self.slots[group];
        Some(if len <= INLINE {
            &slot[..len]
        } else {
            let at = u64::from_le_bytes(slot[..8].try_into().expect("8 bytes")) as usize;
            &self.long[at..at + len]
        })
    }

    fn set(&mut self, group: usize, value: &[u8]) -> Result<()> {
        let len = u32::try_from(value.len())
            .ok()
            .filter(|l| *l != NONE)
            .ok_or_else(|| DataFusionError::Execution("a string of 4 GiB or more".into()))?;
        let slot = &mut self.slots[group];
        if value.len() <= INLINE {
            slot[..value.len()].copy_from_slice(value);
        } else {
            slot[..8].copy_from_slice(&(self.long.len() as u64).to_le_bytes());
            self.long.extend_from_slice(value);
        }
        self.lens[group] = len;
        Ok(())
    }

    /// Fold `values` (a string column) into the groups, skipping rows `filter` does not keep.
    fn fold(
        &mut self,
        values: &ArrayRef,
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        self.lens.resize(total, NONE);
        self.slots.resize(total, [0; INLINE]);
        match values.data_type() {
            DataType::Utf8 => self.fold_rows(values.as_string::<i32>().iter(), groups, filter),
            DataType::Utf8View => self.fold_rows(values.as_string_view().iter(), groups, filter),
            DataType::LargeUtf8 => self.fold_rows(values.as_string::<i64>().iter(), groups, filter),
            other => Err(DataFusionError::Internal(format!(
                "min/max of strings got {other}"
            ))),
        }
    }

    fn fold_rows<'a>(
        &mut self,
        rows: impl Iterator<Item = Option<&'a str>>,
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        for (row, (value, &group)) in rows.zip(groups).enumerate() {
            let Some(value) = value else { continue };
            if filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
                continue;
            }
            let value = value.as_bytes();
            let replaces = match self.value(group) {
                None => true,
                Some(current) if self.is_min => value < current,
                Some(current) => value > current,
            };
            if replaces {
                self.set(group, value)?;
            }
        }
        Ok(())
    }

    /// The values of the groups `emit_to` names, as a column of the input's type; they leave.
    fn emit(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let n = match emit_to {
            EmitTo::All => self.lens.len(),
            EmitTo::First(n) => n,
        };
        let values = (0..n)
            .map(|g| self.value(g).map(std::str::from_utf8).transpose())
            .collect::<std::result::Result<Vec<Option<&str>>, _>>()
            .map_err(|e| DataFusionError::Internal(format!("min/max of strings: {e}")))?;
        let array: ArrayRef = match self.data_type {
            DataType::Utf8View => Arc::new(StringViewArray::from(values)),
            DataType::LargeUtf8 => Arc::new(LargeStringArray::from(values)),
            _ => Arc::new(StringArray::from(values)),
        };
        self.lens.drain(..n);
        self.slots.drain(..n);
        if self
            .lens
            .iter()
            .all(|l| *l == NONE || *l as usize <= INLINE)
        {
            self.long.clear();
        }
        Ok(array)
    }
}

impl GroupsAccumulator for StringMinMax {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.fold(&values[0], group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.emit(emit_to)
    }

    /// The state is the value itself, as for DataFusion's.
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.fold(&values[0], group_indices, None, total_num_groups)
    }

    /// Each row as a state: its value, or null where `opt_filter` drops it.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let Some(filter) = opt_filter else {
            return Ok(vec![values[0].clone()]);
        };
        let kept: BooleanArray = filter.iter().map(|k| Some(k == Some(true))).collect();
        Ok(vec![nullif(&values[0], &not(&kept)?)?])
    }

    fn size(&self) -> usize {
        self.lens.capacity() * 4 + self.slots.capacity() * INLINE + self.long.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::{SessionConfig, SessionContext};

    const LONG: &str = "a string longer than twelve bytes";
    const LONGER: &str = "zz: another value past the inline slot";

    /// g = 1, 1, 1, 2, 2, 3 with s = north, LONG, b, null, LONGER, null, as `Utf8` (`s`) and
    /// `Utf8View` (`v`), in batches of two rows; partial aggregates that stop at once (each row a
    /// state) when `skipping`.
    fn session(skipping: bool) -> SessionContext {
        let config = match skipping {
            true => crate::engine::udaf_override::tests::skipping_config(2, 1),
            false => SessionConfig::new()
                .with_target_partitions(2)
                .with_batch_size(2),
        };
        let ctx = SessionContext::new_with_config(config);
        for f in udafs() {
            ctx.register_udaf(f);
        }
        let strings = vec![
            Some("north"),
            Some(LONG),
            Some("b"),
            None,
            Some(LONGER),
            None,
        ];
        let batch = RecordBatch::try_from_iter([
            (
                "g",
                Arc::new(Int64Array::from(vec![1, 1, 1, 2, 2, 3])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(strings.clone())) as ArrayRef,
            ),
            ("v", Arc::new(StringViewArray::from(strings)) as ArrayRef),
        ])
        .unwrap();
        let batches: Vec<_> = (0..3).map(|i| batch.slice(i * 2, 2)).collect();
        let table =
            datafusion::datasource::MemTable::try_new(batch.schema(), vec![batches]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    /// The first column of `sql`'s rows (a string).
    async fn lines(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut out = Vec::new();
        for b in batches {
            let column = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            out.extend(
                column
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap().to_string()),
            );
        }
        out
    }

    #[tokio::test]
    async fn least_and_greatest_string_per_group_short_long_null_and_filtered() {
        for skipping in [false, true] {
            let ctx = session(skipping);
            for (column, typed) in [("s", "Utf8"), ("v", "Utf8View")] {
                let sql = format!(
                    "SELECT concat_ws('|', g, coalesce(lo, '-'), coalesce(hi, '-'), \
                       coalesce(lo5, '-'), coalesce(hi5, '-'), t) FROM ( \
                     SELECT g, min({column}) AS lo, max({column}) AS hi, \
                       min({column}) FILTER (WHERE length({column}) <= 5) AS lo5, \
                       max({column}) FILTER (WHERE length({column}) <= 5) AS hi5, \
                       arrow_typeof(min({column})) AS t \
                     FROM t GROUP BY g) ORDER BY g"
                );
                assert_eq!(
                    lines(&ctx, &sql).await,
                    [
                        format!("1|{LONG}|north|b|north|{typed}"),
                        format!("2|{LONGER}|{LONGER}|-|-|{typed}"),
                        format!("3|-|-|-|-|{typed}"),
                    ],
                    "{column}, skipping partial aggregation: {skipping}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_planned_min_and_max_of_strings_are_these() {
        let ctx = session(false);
        let plan = ctx
            .sql("SELECT g, min(v), max(s) FROM t GROUP BY g")
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        let datafusion::logical_expr::LogicalPlan::Aggregate(agg) = &plan else {
            panic!("{plan}")
        };
        for e in &agg.aggr_expr {
            let datafusion::logical_expr::Expr::AggregateFunction(f) = e else {
                panic!("{e}")
            };
            assert!(f.func.inner().is::<Overridden<ShortStrings>>(), "{e}");
        }
    }

    #[test]
    fn emitting_the_first_groups_keeps_the_others_long_values() {
        let mut acc = StringMinMax::new(false, DataType::Utf8View);
        let values: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some("b"),
            Some(LONG),
            Some(LONGER),
            Some("a"),
            None,
        ]));
        acc.update_batch(&[values], &[0, 1, 2, 0, 1], None, 3)
            .unwrap();
        let first = acc.evaluate(EmitTo::First(1)).unwrap();
        assert_eq!(first.as_string_view().value(0), "b");
        let rest = acc.evaluate(EmitTo::All).unwrap();
        let rest: Vec<_> = rest.as_string_view().iter().collect();
        assert_eq!(rest, [Some(LONG), Some(LONGER)]);
        assert!(acc.long.is_empty() && acc.lens.is_empty());
        let states = acc
            .convert_to_state(
                &[Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])) as ArrayRef],
                Some(&BooleanArray::from(vec![Some(true), None, Some(true)])),
            )
            .unwrap();
        let states: Vec<_> = states[0].as_string::<i32>().iter().collect();
        assert_eq!(states, [Some("x"), None, None]);
    }
}
