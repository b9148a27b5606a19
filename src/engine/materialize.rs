//! `WITH x AS MATERIALIZED (...)`, PostgreSQL's syntax, honoured: such a CTE is computed once per
//! run of its job, however many times the rest of the query reads it.
//!
//! DataFusion inlines every CTE, so a CTE read three times is computed three times, and its
//! default dialect does not parse `AS MATERIALIZED`: the keyword is found among the SQL's tokens
//! and blanked (so error positions stay true), and the CTEs it marked are taken out of the parsed
//! query. Each becomes a table of the job's own session before the query is planned: its query
//! (with the CTEs before it) is planned and bound like the job's; the first read of it that runs
//! computes it and keeps the batches, and every read streams them. The batches are reserved in
//! the session's memory pool; when the pool cannot hold them, they are written to a spill file
//! (DataFusion's spill manager, in the engine's spill directory) that every read streams, and the
//! job's `spilled_bytes` counts it. Without a spill directory, a CTE too large for
//! `memory_limit` fails with DataFusion's "resources exhausted" error and the job publishes
//! nothing.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ParamValues;
use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::utils::memory::RecordBatchMemoryCounter;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SpillFile;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, TableType};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet, SpillMetrics};
use datafusion::physical_plan::spill::SpillManager;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_plan::{StatisticsArgs, StatisticsContext};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Cte, CteAsMaterialized, Query, Statement, With};
use futures::StreamExt;
use futures::TryStreamExt;
use tokio::sync::OnceCell;

/// Plan `sql` in `ctx` with `params` bound, registering its materialized CTEs as tables of `ctx`
/// first (with `materialize`; without it they are inlined like any CTE). A query without one is
/// planned exactly as `ctx.sql` would.
pub async fn plan_sql(
    ctx: &SessionContext,
    sql: &str,
    params: &ParamValues,
    materialize: bool,
) -> Result<LogicalPlan> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let (sql, marked) = unmark(sql)?;
    let mut statement = state.sql_to_statement(&sql, &dialect)?;
    if let DfStatement::Statement(inner) = &mut statement
        && let Statement::Query(query) = inner.as_mut()
        && let Some(mut with) = query.with.take()
    {
        for cte in &mut with.cte_tables {
            if materialize && marked.contains(&cte.alias.name.value) {
                cte.materialized = Some(CteAsMaterialized::Materialized);
            }
        }
        query.with = register_materialized(ctx, with, params).await?;
    }
    state
        .statement_to_plan(statement)
        .await?
        .with_param_values(params.clone())
}

/// `sql` with each `name AS MATERIALIZED (` written as `name AS              (`, and those names.
pub fn unmark(sql: &str) -> Result<(String, Vec<String>)> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| DataFusionError::SQL(Box::new(e.into()), None))?;
    let words: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut text = sql.to_string();
    let mut names = Vec::new();
    for w in words.windows(5) {
        let keyword =
            |i: usize, k: Keyword| matches!(&w[i].token, Token::Word(x) if x.keyword == k);
        let opens_cte = keyword(0, Keyword::WITH) || w[0].token == Token::Comma;
        if opens_cte
            && keyword(2, Keyword::AS)
            && keyword(3, Keyword::MATERIALIZED)
            && w[4].token == Token::LParen
            && let Token::Word(name) = &w[1].token
        {
            let at = byte_offset(sql, w[3].span.start.line, w[3].span.start.column);
            text.replace_range(
                at..at + "MATERIALIZED".len(),
                &" ".repeat("MATERIALIZED".len()),
            );
            names.push(name.value.clone());
        }
    }
    Ok((text, names))
}

/// The byte offset of a 1-based line and column (in characters).
fn byte_offset(sql: &str, line: u64, column: u64) -> usize {
    let line_start: usize = sql
        .split_inclusive('\n')
        .take(line.saturating_sub(1) as usize)
        .map(str::len)
        .sum();
    line_start
        + sql[line_start..]
            .chars()
            .take(column.saturating_sub(1) as usize)
            .map(char::len_utf8)
            .sum::<usize>()
}

/// Register each materialized CTE of `with` as a table of `ctx`; returns the CTEs left to inline.
async fn register_materialized(
    ctx: &SessionContext,
    with: With,
    params: &ParamValues,
) -> Result<Option<With>> {
    let mut inlined: Vec<Cte> = Vec::new();
    for cte in with.cte_tables {
        if !matches!(cte.materialized, Some(CteAsMaterialized::Materialized)) {
            inlined.push(cte);
            continue;
        }
        let name = cte.alias.name.value.clone();
        // A session that plans the job again (SQL tests) replaces the CTE of the last planning.
        if let Some(existing) = ctx.table_provider(name.as_str()).await.ok()
            && !existing.is::<MaterializedCte>()
        {
            return Err(DataFusionError::Plan(format!(
                "the materialized CTE `{name}` has the name of a table this job reads; rename it"
            )));
        }
        ctx.deregister_table(name.as_str())?;
        let query = with_preceding(&with.with_token, with.recursive, &inlined, *cte.query);
        let statement = DfStatement::Statement(Box::new(Statement::Query(Box::new(query))));
        let plan = ctx
            .state()
            .statement_to_plan(statement)
            .await?
            .with_param_values(params.clone())?;
        ctx.register_table(
            name.as_str(),
            Arc::new(MaterializedCte::new(name.clone(), plan)),
        )?;
    }
    Ok((!inlined.is_empty()).then_some(With {
        cte_tables: inlined,
        ..with
    }))
}

/// `query` with the inlined CTEs declared before it in front of its own.
fn with_preceding(
    token: &datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken,
    recursive: bool,
    preceding: &[Cte],
    mut query: Query,
) -> Query {
    let mut ctes = preceding.to_vec();
    if let Some(own) = query.with.take() {
        ctes.extend(own.cte_tables);
    }
    if !ctes.is_empty() {
        query.with = Some(With {
            with_token: token.clone(),
            recursive,
            cte_tables: ctes,
        });
    }
    query
}

/// A materialized CTE: its plan, and its batches once the first scan of it has run.
#[derive(Debug)]
struct MaterializedCte {
    name: String,
    plan: LogicalPlan,
    schema: SchemaRef,
    computed: Arc<OnceCell<Computed>>,
}

/// A computed CTE: its batches in memory, reserved in the session's pool while the job runs, or,
/// when the pool could not hold them, in a spill file every read streams from disk.
enum Computed {
    Held {
        batches: Vec<RecordBatch>,
        _reservation: MemoryReservation,
    },
    Spilled {
        file: Option<Arc<dyn SpillFile>>,
        spill: SpillManager,
    },
}

impl std::fmt::Debug for Computed {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Computed::Held { batches, .. } => write!(f, "Held({} batches)", batches.len()),
            Computed::Spilled { .. } => write!(f, "Spilled"),
        }
    }
}

impl MaterializedCte {
    fn new(name: String, plan: LogicalPlan) -> Self {
        let schema = Arc::new(plan.schema().as_arrow().clone());
        Self {
            name,
            plan,
            schema,
            computed: Arc::new(OnceCell::new()),
        }
    }
}

#[async_trait]
impl TableProvider for MaterializedCte {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    /// Plans the CTE's query (without running it): `explain` shows it and computes nothing.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        // The computed batches dealt over the session's partitions, so that a reader's repartition
        // hashes them on every core.
        let partitions = state.config().target_partitions().max(1);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Arc::new(MaterializedCteExec {
            name: self.name.clone(),
            query: state.create_physical_plan(&self.plan).await?,
            projection: projection.cloned(),
            computed: self.computed.clone(),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// One read of a materialized CTE: the first read to run computes it, every read streams it.
#[derive(Debug, Clone)]
struct MaterializedCteExec {
    name: String,
    query: Arc<dyn ExecutionPlan>,
    projection: Option<Vec<usize>>,
    computed: Arc<OnceCell<Computed>>,
    properties: Arc<PlanProperties>,
    /// Where the computing read counts what it spilled.
    metrics: ExecutionPlanMetricsSet,
}

/// The name and query of a materialized CTE's node in a physical plan (a leaf: its query runs
/// once, when the node is first read).
pub fn cte_query(plan: &dyn ExecutionPlan) -> Option<(&str, &Arc<dyn ExecutionPlan>)> {
    let cte = plan.downcast_ref::<MaterializedCteExec>()?;
    Some((&cte.name, &cte.query))
}

impl MaterializedCteExec {
    /// Run the CTE's query once, keeping its batches in memory while the pool has room for them
    /// and writing them all to a spill file (through DataFusion's spill manager) once it has not.
    async fn compute(&self, task: Arc<TaskContext>) -> Result<Computed> {
        let (name, metrics) = (&self.name, &self.metrics);
        let schema = self.query.schema();
        let mut stream =
            datafusion::physical_plan::execute_stream(self.query.clone(), task.clone())?;
        let reservation = MemoryConsumer::new(format!("materialized CTE {name}"))
            .with_can_spill(true)
            .register(task.memory_pool());
        let (mut held, mut counter) = (Vec::new(), RecordBatchMemoryCounter::new());
        while let Some(batch) = stream.next().await {
            // Each batch gets buffers of its own: an aggregate emits slices of one buffer, and an
            // operator reading the CTE (a sort) would count every slice as that whole buffer.
            let batch = owned(&batch?)?;
            // Buffers still shared after the copy (a dictionary's values) are counted once.
            let bytes = counter.count_batch(&batch);
            if reservation.try_grow(bytes).is_ok() {
                held.push(batch);
                continue;
            }
            let spill = SpillManager::new(
                task.runtime_env(),
                SpillMetrics::new(metrics, 0),
                schema.clone(),
            );
            let mut file = spill.create_in_progress_file(&format!("materialized CTE {name}"))?;
            for batch in held.drain(..).chain([batch]) {
                file.append_batch(&batch)?;
            }
            reservation.free();
            tracing::debug!(cte = %name, "materialized CTE spilled to disk");
            while let Some(batch) = stream.next().await {
                file.append_batch(&owned(&batch?)?)?;
            }
            let file = file.finish()?;
            return Ok(Computed::Spilled { file, spill });
        }
        // Held, it can no longer spill: the pool's sharing rules must count it as fixed.
        let pinned = MemoryConsumer::new(format!("materialized CTE {name} (held)"))
            .register(task.memory_pool());
        let held_bytes = reservation.free();
        pinned.grow(held_bytes);
        Ok(Computed::Held {
            batches: held,
            _reservation: pinned,
        })
    }

    /// A stream of `partition`'s share of the computed CTE's batches, projected: every
    /// `partitions`th batch held, or the whole spill file for the first partition.
    fn read(&self, done: &Computed, partition: usize) -> Result<SendableRecordBatchStream> {
        let partitions = self.properties.partitioning.partition_count();
        let schema = self.properties.eq_properties.schema().clone();
        let projection = self.projection.clone();
        let project = move |b: RecordBatch| match &projection {
            Some(p) => b.project(p).map_err(DataFusionError::from),
            None => Ok(b),
        };
        let batches: futures::stream::BoxStream<'static, Result<RecordBatch>> = match done {
            Computed::Held { batches, .. } => {
                let share: Vec<RecordBatch> = batches
                    .iter()
                    .skip(partition)
                    .step_by(partitions)
                    .cloned()
                    .collect();
                futures::stream::iter(share.into_iter().map(project)).boxed()
            }
            Computed::Spilled {
                file: Some(file),
                spill,
            } if partition == 0 => spill
                .read_spill_as_stream(file.clone(), None)?
                .map(move |b| b.and_then(&project))
                .boxed(),
            Computed::Spilled { .. } => futures::stream::empty().boxed(),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

impl DisplayAs for MaterializedCteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "MaterializedCteExec: {}", self.name)
    }
}

impl ExecutionPlan for MaterializedCteExec {
    fn name(&self) -> &'static str {
        "MaterializedCteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let this = self.clone();
        let batches = async move {
            let done = this
                .computed
                .get_or_try_init(|| this.compute(context))
                .await?;
            this.read(done, partition)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.properties.eq_properties.schema().clone(),
            futures::stream::once(batches).try_flatten(),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    /// The CTE's query's statistics, inexact, for the columns read (their bytes unknown when
    /// some are not read): the planner and the engine's memory estimates see its size.
    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        if args.partition().is_some() {
            // A partition's share is known only once the CTE is computed.
            return Ok(Arc::new(Statistics::new_unknown(&self.schema())));
        }
        let all = StatisticsContext::new().compute(self.query.as_ref(), &StatisticsArgs::new())?;
        let mut stats = all.as_ref().clone().to_inexact();
        if let Some(projection) = &self.projection {
            stats = stats.project(Some(projection));
            stats.total_byte_size = Precision::Absent;
        }
        Ok(Arc::new(stats))
    }
}

/// `batch` copied into buffers that hold just its rows.
pub fn owned(batch: &RecordBatch) -> Result<RecordBatch> {
    let rows = datafusion::arrow::array::UInt32Array::from_iter_values(0..batch.num_rows() as u32);
    Ok(datafusion::arrow::compute::take_record_batch(batch, &rows)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::common::ScalarValue;
    use datafusion::prelude::DataFrame;

    /// The physical plan of `sql` (no parameters) in `ctx`, its materialized CTEs registered.
    pub(crate) async fn physical_plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        let plan = plan_sql(ctx, sql, &ParamValues::List(vec![]), true)
            .await
            .unwrap();
        DataFrame::new(ctx.state(), plan)
            .create_physical_plan()
            .await
            .unwrap()
    }

    async fn rows(
        ctx: &SessionContext,
        sql: &str,
        params: ParamValues,
    ) -> Result<Vec<RecordBatch>> {
        let plan = plan_sql(ctx, sql, &params, true).await?;
        DataFrame::new(ctx.state(), plan).collect().await
    }

    #[tokio::test]
    async fn a_materialized_cte_is_computed_once_for_all_its_readers() {
        // random() differs on every evaluation: equal values on both sides of the join mean one
        // computation; the same CTE inlined is computed once per reference.
        let same = "SELECT a.v = b.v AS same FROM r a CROSS JOIN r b";
        for (with, expected) in [("r AS MATERIALIZED", true), ("r AS", false)] {
            let ctx = SessionContext::new();
            let sql = format!("WITH {with} (SELECT random() AS v) {same}");
            let batches = rows(&ctx, &sql, ParamValues::List(vec![])).await.unwrap();
            assert_eq!(
                batches[0].column(0).as_boolean().value(0),
                expected,
                "{with}"
            );
        }
    }

    #[tokio::test]
    async fn a_materialized_ctes_batches_are_dealt_over_the_partitions_each_once() {
        // 10 batches of 3 rows (the batch size) over 4 partitions: 3, 3, 2 and 2 batches.
        let config = datafusion::prelude::SessionConfig::new()
            .with_target_partitions(4)
            .with_batch_size(3);
        let ctx = SessionContext::new_with_config(config);
        let sql = "WITH r AS MATERIALIZED (SELECT unnest(range(0, 30)) AS v) SELECT v FROM r";
        let mut leaf = physical_plan(&ctx, sql).await;
        while let Some(child) = leaf.children().first() {
            leaf = (*child).clone();
        }
        assert_eq!(leaf.name(), "MaterializedCteExec");
        assert_eq!(leaf.properties().partitioning.partition_count(), 4);
        let mut per_partition = Vec::new();
        let mut values = Vec::new();
        for partition in 0..4 {
            let stream = leaf.execute(partition, ctx.task_ctx()).unwrap();
            let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
            per_partition.push(batches.iter().map(|b| b.num_rows()).sum::<usize>());
            for b in &batches {
                values.extend(
                    b.column(0)
                        .as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .copied(),
                );
            }
        }
        values.sort();
        assert_eq!(per_partition, vec![9, 9, 6, 6]);
        assert_eq!(values, (0..30).collect::<Vec<i64>>());
    }

    #[tokio::test]
    async fn it_sees_the_ctes_before_it_and_the_bound_parameters() {
        let ctx = SessionContext::new();
        let sql = "WITH base AS (SELECT column1 AS x FROM (VALUES (1), (2), (3), (4)))\n\
                   , big AS MATERIALIZED (SELECT x FROM base WHERE x >= $min)\n\
                   SELECT count(*) AS n, sum(b.x) AS s FROM big b JOIN big c ON b.x = c.x";
        // Planned twice in one session (as the SQL tests do), with other parameters.
        for (min, expected) in [(3, (2, 7)), (2, (3, 9))] {
            let params =
                ParamValues::from(vec![("min".to_string(), ScalarValue::Int64(Some(min)))]);
            let batches = rows(&ctx, sql, params).await.unwrap();
            let n = batches[0].column(0).as_primitive::<Int64Type>().value(0);
            let s = batches[0].column(1).as_primitive::<Int64Type>().value(0);
            assert_eq!((n, s), expected, "min {min}");
        }
        // The CTE is a table of the job's session now; the inlined one is not.
        assert!(ctx.table_exist("big").unwrap() && !ctx.table_exist("base").unwrap());
    }

    #[test]
    fn the_keyword_is_blanked_in_place_and_only_after_a_cte_name() {
        let sql = "WITH a AS MATERIALIZED (SELECT 'x AS MATERIALIZED (' AS s),\n  b AS materialized (SELECT 1)\nSELECT * FROM a, b";
        let (text, names) = unmark(sql).unwrap();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(text.len(), sql.len());
        assert_eq!(
            text,
            "WITH a AS              (SELECT 'x AS MATERIALIZED (' AS s),\n  b AS              (SELECT 1)\nSELECT * FROM a, b"
        );
    }

    #[tokio::test]
    async fn a_cte_larger_than_the_memory_limit_spills_or_without_disk_fails() {
        use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        // 100,000 values, 800 KB, read twice under a 64 KiB pool.
        let sql = "WITH m AS MATERIALIZED (SELECT x * 2 AS y FROM t)\n\
                   SELECT count(*), sum(y) FROM (SELECT y FROM m UNION ALL SELECT y FROM m)";
        for disk in [DiskManagerMode::OsTmpDirectory, DiskManagerMode::Disabled] {
            let runtime = RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(GreedyMemoryPool::new(64 * 1024)))
                .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(disk.clone()))
                .build_arc()
                .unwrap();
            // One partition: no repartition that would spill before the CTE does.
            let config = datafusion::prelude::SessionConfig::new().with_target_partitions(1);
            let ctx = SessionContext::new_with_config_rt(config, runtime);
            let big = Int64Array::from_iter_values(0..100_000);
            ctx.register_batch(
                "t",
                RecordBatch::try_from_iter([("x", Arc::new(big) as _)]).unwrap(),
            )
            .unwrap();
            let physical = physical_plan(&ctx, sql).await;
            let result = datafusion::physical_plan::collect(physical.clone(), ctx.task_ctx()).await;
            if matches!(disk, DiskManagerMode::Disabled) {
                let err = result.unwrap_err().to_string();
                assert!(err.contains("Resources exhausted"), "{err}");
                assert!(err.contains("materialized CTE m"), "{err}");
                continue;
            }
            let batches = result.unwrap();
            // Twice the sum of 2x for x in 0..100,000: 2 * 2 * 4,999,950,000.
            let count = batches[0].column(0).as_primitive::<Int64Type>().value(0);
            let sum = batches[0].column(1).as_primitive::<Int64Type>().value(0);
            assert_eq!((count, sum), (200_000, 19_999_800_000));
            let spilled = crate::engine::memory::spilled_bytes(&physical);
            assert!(spilled > 800_000, "{spilled}");
        }
    }

    #[tokio::test]
    async fn an_aggregates_sliced_output_is_counted_once() {
        // 200,000 groups: the aggregate emits one buffer as about 25 slices of 8,192 rows, 3.2 MB
        // in all. Counted slice by slice (each slice counts its whole buffer), by the CTE or by a
        // sort reading it, it would be about 80 MB and fail under this 24 MiB pool.
        use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(24 * 1024 * 1024)))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(Default::default(), runtime);
        let keys = Int64Array::from_iter_values((0..400_000).map(|i| i % 200_000));
        ctx.register_batch(
            "t",
            RecordBatch::try_from_iter([("k", Arc::new(keys) as _)]).unwrap(),
        )
        .unwrap();
        let sql = "WITH g AS MATERIALIZED (SELECT k, count(*) AS n FROM t GROUP BY k)\n\
                   SELECT count(*), sum(a.n) FROM g a JOIN g b ON a.k = b.k";
        let batches = rows(&ctx, sql, ParamValues::List(vec![])).await.unwrap();
        let count = batches[0].column(0).as_primitive::<Int64Type>().value(0);
        let total = batches[0].column(1).as_primitive::<Int64Type>().value(0);
        assert_eq!((count, total), (200_000, 400_000));
        // A sort of the CTE's rows fits too (spilling is off): it sees batches of their own.
        let sql = "WITH g AS MATERIALIZED (SELECT k, count(*) AS n FROM t GROUP BY k)\n\
                   SELECT max(r) FROM (SELECT row_number() OVER (ORDER BY n DESC, k) AS r FROM g)";
        let batches = rows(&ctx, sql, ParamValues::List(vec![])).await.unwrap();
        let top = batches[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        assert_eq!(top.value(0), 200_000);
    }

    #[tokio::test]
    async fn a_materialized_cte_may_not_shadow_a_table_the_job_reads() {
        let ctx = SessionContext::new();
        ctx.register_batch(
            "t",
            RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1])) as _)]).unwrap(),
        )
        .unwrap();
        let err = rows(
            &ctx,
            "WITH t AS MATERIALIZED (SELECT 2 AS x) SELECT x FROM t",
            ParamValues::List(vec![]),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("materialized CTE `t` has the name of a table"),
            "{err}"
        );
    }
}
