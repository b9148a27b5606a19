//! A DataFusion aggregate with its groups accumulator replaced, and everything else its own:
//! name, signature, types, plain and sliding accumulators, statistics and simplification.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunctionParams;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    SetMonotonicity, Signature, StatisticsArgs,
};

/// What replaces an aggregate's groups accumulator.
pub trait GroupsOverride: std::fmt::Debug + Send + Sync + 'static {
    /// Whether a groups accumulator serves `args` (`inner` is DataFusion's aggregate).
    fn supported(&self, inner: &dyn AggregateUDFImpl, args: AccumulatorArgs) -> bool;
    /// The groups accumulator for `args`.
    fn create(
        &self,
        inner: &dyn AggregateUDFImpl,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>>;
}

/// DataFusion's aggregate `inner`, its groups accumulators made by `with`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Overridden<O> {
    inner: Arc<AggregateUDF>,
    with: O,
}

impl<O> Overridden<O> {
    pub fn new(inner: Arc<AggregateUDF>, with: O) -> Self {
        Self { inner, with }
    }

    fn of(&self) -> &dyn AggregateUDFImpl {
        self.inner.inner().as_ref()
    }
}

impl<O: GroupsOverride + PartialEq + Eq + std::hash::Hash> AggregateUDFImpl for Overridden<O> {
    fn name(&self) -> &str {
        self.of().name()
    }
    fn aliases(&self) -> &[String] {
        self.of().aliases()
    }
    fn schema_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.of().schema_name(params)
    }
    fn human_display(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.of().human_display(params)
    }
    fn display_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.of().display_name(params)
    }
    fn signature(&self) -> &Signature {
        self.of().signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.of().return_type(arg_types)
    }
    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.of().return_field(arg_fields)
    }
    fn is_nullable(&self) -> bool {
        self.of().is_nullable()
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.of().accumulator(args)
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.of().state_fields(args)
    }
    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.with.supported(self.of(), args)
    }
    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        self.with.create(self.of(), args)
    }
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.of().create_sliding_accumulator(args)
    }
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.of().order_sensitivity()
    }
    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.of().simplify()
    }
    fn reverse_expr(&self) -> ReversedUDAF {
        self.of().reverse_expr()
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.of().coerce_types(arg_types)
    }
    fn is_descending(&self) -> Option<bool> {
        self.of().is_descending()
    }
    fn value_from_stats(&self, args: &StatisticsArgs) -> Option<ScalarValue> {
        self.of().value_from_stats(args)
    }
    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.of().default_value(data_type)
    }
    fn supports_null_handling_clause(&self) -> bool {
        self.of().supports_null_handling_clause()
    }
    fn supports_within_group_clause(&self) -> bool {
        self.of().supports_within_group_clause()
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.of().documentation()
    }
    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.of().set_monotonicity(data_type)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use datafusion::prelude::SessionConfig;

    /// Two partitions and batches of `batch` rows, whose partial aggregates stop after `rows` rows
    /// and turn each row into a state, as the spilling plan's do.
    pub(crate) fn skipping_config(batch: usize, rows: usize) -> SessionConfig {
        let mut config = SessionConfig::new()
            .with_target_partitions(2)
            .with_batch_size(batch);
        let execution = &mut config.options_mut().execution;
        execution.skip_partial_aggregation_probe_ratio_threshold = 0.0;
        execution.skip_partial_aggregation_probe_rows_threshold = rows;
        config
    }
}
