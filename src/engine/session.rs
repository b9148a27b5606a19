//! DataFusion sessions for a project: one shared runtime (object stores, memory pool), the
//! injected clock and session hooks, and a fresh session per job with retention's functions.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::execution::context::SessionState;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use datafusion_distributed::DistributedExt;

use crate::clock::SharedClock;
use crate::engine::hook::SessionHook;
use crate::engine::memory::JobMemory;
use crate::error::{Error, Result};
use crate::project::config::{Cluster, Project};
use crate::store::Stores;

/// Rows per batch in every session (DataFusion's default is 8,192).
pub const BATCH_ROWS: usize = 32_768;

/// The most memory one run's listings of its sources may take (about 150 bytes a file); a
/// source whose listing does not fit is listed again by each scan.
const RUN_LISTINGS_BYTES: usize = 64 << 20;

/// Shared engine state: project settings, stores and the DataFusion runtime.
#[derive(Clone)]
pub struct Engine {
    pub project: Project,
    pub stores: Stores,
    pub runtime: Arc<RuntimeEnv>,
    /// Where the run's wall-clock times and `today` come from.
    pub clock: SharedClock,
    /// Installed by the layers above (month close), called on every session and job.
    pub hooks: Vec<Arc<dyn SessionHook>>,
    /// Connections to workers over TLS (`[engine] worker_ca`), shared by every session.
    pub worker_tls: Option<crate::engine::cluster::TlsChannels>,
    /// The token a coordinator sends its workers, read once from `RETENTION_WORKER_TOKEN`.
    worker_token: Option<crate::engine::cluster::WorkerToken>,
}

/// The most spilled runs one merge step reads at once; more runs are merged in several passes.
const SPILL_MERGE_FAN_IN: usize = 16;

impl Engine {
    /// Build the runtime for `project` over `stores` (which tests may have pre-filled).
    pub fn new(project: Project, stores: Stores) -> Result<Engine> {
        // DataFusion 55 caches object listings for the runtime's lifetime by default: files that
        // land in the raw store later (a late ledger posting) would never be seen by a
        // long-lived engine. Sources are listed afresh on every run.
        let mut builder = RuntimeEnvBuilder::new().with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0),
        );
        // DataFusion's merge of spilled runs otherwise reads as many runs at once as the pool
        // lets it reserve buffers for, starving the operators beside it.
        builder = builder.with_disk_manager_builder(
            datafusion::execution::disk_manager::DiskManagerBuilder::default()
                .with_max_spill_merge_fan_in(SPILL_MERGE_FAN_IN),
        );
        if let Some(limit) = project.memory_limit {
            builder = builder.with_memory_limit(limit, 1.0);
        }
        let runtime = builder.build_arc()?;
        let in_memory = stores.latency().is_zero()
            && [&project.raw, &project.curated]
                .iter()
                .all(|u| u.scheme() == "memory");
        stores.set_read_cache(project.read_cache.bytes(in_memory, project.memory_limit));
        stores.register_with(&runtime, &[&project.raw, &project.curated])?;
        let worker_tls = match &project.worker_ca {
            Some(ca) => Some(crate::engine::cluster::TlsChannels::from_pem_file(ca)?),
            None => None,
        };
        let worker_token = match project.cluster {
            Some(_) => crate::engine::cluster::WorkerToken::from_env()?,
            None => None,
        };
        Ok(Engine {
            worker_tls,
            worker_token,
            project,
            stores,
            runtime,
            clock: crate::clock::system(),
            hooks: Vec::new(),
        })
    }

    /// This engine for one run: its sessions list each source's files once, when the run checks
    /// the source's contract, and every job of the run reads that listing (at 1M orders a run
    /// walked each daily table's 730 folders 3 to 7 times). Files that land during the run are
    /// seen by the next run; caches keyed by a file's size and ETag (footers, statistics, small
    /// files) stay shared with the engine.
    pub fn for_run(&self) -> Result<Engine> {
        use datafusion::execution::cache::cache_manager::{CacheManager, CacheManagerConfig};
        let shared = &self.runtime.cache_manager;
        let mut caches = CacheManagerConfig::default()
            .with_list_files_cache_limit(RUN_LISTINGS_BYTES)
            .with_file_statistics_cache_limit(shared.get_file_statistic_cache_limit())
            .with_file_metadata_cache(Some(shared.get_file_metadata_cache()))
            .with_metadata_cache_limit(shared.get_metadata_cache_limit());
        if let Some(statistics) = shared.get_file_statistic_cache() {
            caches = caches.with_file_statistics_cache(Some(statistics));
        }
        let runtime = self.runtime_of(
            self.runtime.memory_pool.clone(),
            CacheManager::try_new(&caches)?,
            self.runtime.object_store_registry.clone(),
        );
        Ok(Engine {
            runtime,
            ..self.clone()
        })
    }

    /// The clock's UTC day: `today`, and the day that types `$as_of` when SQL is only planned
    /// (`validate`, `explain`), where the plan does not depend on the day.
    pub fn today(&self) -> chrono::NaiveDate {
        self.clock.now().date_naive()
    }

    /// Use `clock` for every reading of the time (tests fix it).
    pub fn with_clock(mut self, clock: SharedClock) -> Engine {
        self.clock = clock;
        self
    }

    /// Add a hook called on every session and every job's planned output.
    pub fn with_hook(mut self, hook: Arc<dyn SessionHook>) -> Engine {
        self.hooks.push(hook);
        self
    }

    /// Session settings: the project's `[datafusion]` table applied through `ConfigOptions::set`.
    pub fn config(&self) -> Result<SessionConfig> {
        // DATAFUSION_* environment variables first (DataFusion's own mapping), then the file.
        self.tune(SessionConfig::from_env()?.with_information_schema(true))
    }

    /// `config` with retention's defaults and the project's settings laid over it (a worker's
    /// sessions get them this way too, over the coordinator's distributed settings).
    pub fn tune(&self, mut config: SessionConfig) -> Result<SessionConfig> {
        // The project's partitions, else DATAFUSION_EXECUTION_TARGET_PARTITIONS, else at least 8
        // (project::config::default_target_partitions).
        if let Some(n) = self.project.target_partitions {
            config = config.with_target_partitions(n);
        } else if !self.partitions_chosen() {
            // DataFusion's own default: one per core.
            let cores = config.target_partitions();
            config = config
                .with_target_partitions(crate::project::config::default_target_partitions(cores));
        }
        // Batches of 32,768 rows rather than 8,192: joins, aggregates and repartitions pass a
        // quarter as many batches (the whole DAG at 1M orders: 28.8 s -> 26.0 s). Overridable.
        if std::env::var_os("DATAFUSION_EXECUTION_BATCH_SIZE").is_none() {
            config = config.with_batch_size(BATCH_ROWS);
        }
        // The distributed planner's settings (`distributed.*` in [datafusion]), sent on to the
        // workers; inert in a session that plans locally. A worker's config has them already.
        if config
            .options()
            .extensions
            .get::<datafusion_distributed::DistributedConfig>()
            .is_none()
        {
            config = config.with_distributed_option_extension(
                datafusion_distributed::DistributedConfig::default(),
            );
        }
        let options = config.options_mut();
        options.sql_parser.collect_spans = true;
        // As delta-rs does: hash-join IN-list pushdown can panic on dictionary-encoded keys
        // (Hive partition columns). Overridable through [datafusion].
        options.optimizer.hash_join_inlist_pushdown_max_size = 0;
        // Raw sources' strings are read as Utf8View (engine::contract): they are short codes
        // (region, status, carrier, reason), inline in the view, so joins and repartitions move
        // 16 bytes per value instead of copying string data. At 10M orders, `run --all` took
        // 99.2 s against 105.4 s (churn_rate 8.31 s -> 6.61 s). Curated tables are read as Utf8
        // (store::delta::provider) and written as Utf8 (engine::job). Overridable.
        options.execution.parquet.schema_force_view_types = true;
        options
            .optimizer
            .hash_join_inlist_pushdown_max_distinct_values = 0;
        // Each sort holds this much back for merging what it spilled, outside what it may spill:
        // DataFusion's 10 MiB, or a 64th of a smaller memory limit (a few sorts at once must not
        // take the whole pool before any of them has read a row). Overridable.
        if let Some(limit) = self.project.memory_limit
            && std::env::var_os("DATAFUSION_EXECUTION_SORT_SPILL_RESERVATION_BYTES").is_none()
        {
            let held_back = &mut options.execution.sort_spill_reservation_bytes;
            *held_back = (*held_back).min(limit / 64);
        }
        for (k, v) in &self.project.datafusion {
            // A DATAFUSION_* environment variable for the same key wins over the file.
            if std::env::var_os(k.to_ascii_uppercase().replace('.', "_")).is_some() {
                continue;
            }
            options.set(k, v).map_err(|e| Error::Config {
                path: self.project.root.join(crate::project::config::PROJECT_FILE),
                key: k.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(config)
    }

    /// Whether the project or DATAFUSION_EXECUTION_TARGET_PARTITIONS chose the partitions per
    /// query, rather than retention's default.
    fn partitions_chosen(&self) -> bool {
        self.project.target_partitions.is_some()
            || std::env::var_os("DATAFUSION_EXECUTION_TARGET_PARTITIONS").is_some()
    }

    /// A new session sharing the runtime, with `tables` registered by name.
    pub fn session(&self, tables: &[(String, Arc<dyn TableProvider>)]) -> Result<SessionContext> {
        self.session_with(self.config()?, tables)
    }

    /// A job's session: as `session`, with every reservation counted in `memory` on its way to
    /// the shared pool. With a distributed engine, its queries execute on the workers.
    pub fn job_session(
        &self,
        tables: &[(String, Arc<dyn TableProvider>)],
        memory: &Arc<JobMemory>,
    ) -> Result<SessionContext> {
        let runtime = self.runtime_with(memory.clone(), self.runtime.object_store_registry.clone());
        let placement = match &self.project.cluster {
            Some(cluster) => Placement::Cluster(cluster),
            None => Placement::Local,
        };
        self.session_in(runtime, self.config()?, tables, placement)
    }

    /// A job's session for its second attempt, once it ran out of memory: its spilling operators
    /// share the job's memory (engine/share_pool.rs), joins are sort-merge joins (sorts spill, a
    /// hash join's build side cannot), and no aggregate is partial.
    pub fn spilling_job_session(
        &self,
        tables: &[(String, Arc<dyn TableProvider>)],
        memory: &Arc<JobMemory>,
    ) -> Result<SessionContext> {
        memory.share_spilling();
        let ctx = self.job_session(tables, memory)?;
        {
            let state = ctx.state_ref();
            let mut state = state.write();
            let options = state.config_mut().options_mut();
            options.optimizer.prefer_hash_join = false;
            // DataFusion plans a sort-merge join only over repartitioned inputs. One partition
            // per core unless the project or the environment chose (at least 2): each
            // partition's aggregates and sorts hold their own buffers, and with the default 8 on
            // 2 cores order_experience at 51.6M orders could not fit 2 GiB even spilling.
            options.optimizer.repartition_joins = true;
            if !self.partitions_chosen() {
                options.execution.target_partitions = crate::project::config::cores();
            }
            options.execution.target_partitions = options.execution.target_partitions.max(2);
            // No partial aggregation: DataFusion 55.2's partial hash table keeps its doubled
            // capacity after it emits under memory pressure, and fails on it (cohort_retention
            // at 51.6M orders); the final aggregate, which spills, does the work.
            options
                .execution
                .skip_partial_aggregation_probe_ratio_threshold = 0.0;
        }
        Ok(ctx)
    }

    /// The shared runtime's spill directory and caches, with `memory_pool` and `object_stores`
    /// in place of its own (a job's counted pool; a worker's store discovery).
    pub fn runtime_with(
        &self,
        memory_pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
        object_stores: Arc<dyn datafusion::execution::object_store::ObjectStoreRegistry>,
    ) -> Arc<RuntimeEnv> {
        let caches = self.runtime.cache_manager.clone();
        self.runtime_of(memory_pool, caches, object_stores)
    }

    /// A runtime with the shared runtime's spill directory and the given pool, caches and stores.
    fn runtime_of(
        &self,
        memory_pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
        cache_manager: Arc<datafusion::execution::cache::cache_manager::CacheManager>,
        object_stores: Arc<dyn datafusion::execution::object_store::ObjectStoreRegistry>,
    ) -> Arc<RuntimeEnv> {
        // Fields behind DataFusion features this build leaves off keep their defaults.
        #[allow(clippy::needless_update)]
        Arc::new(RuntimeEnv {
            memory_pool,
            disk_manager: self.runtime.disk_manager.clone(),
            cache_manager,
            object_store_registry: object_stores,
            ..RuntimeEnv::default()
        })
    }

    /// As `session`, with `config` (from `config()`, adjusted) instead of the project's.
    pub fn session_with(
        &self,
        config: SessionConfig,
        tables: &[(String, Arc<dyn TableProvider>)],
    ) -> Result<SessionContext> {
        self.session_in(self.runtime.clone(), config, tables, Placement::Local)
    }

    /// Whether jobs' queries execute on a cluster's workers.
    pub fn is_distributed(&self) -> bool {
        self.project.cluster.is_some()
    }

    fn session_in(
        &self,
        runtime: Arc<RuntimeEnv>,
        config: SessionConfig,
        tables: &[(String, Arc<dyn TableProvider>)],
        placement: Placement,
    ) -> Result<SessionContext> {
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            // Delta's planner: its writer plans custom nodes through the session we pass it.
            .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
            // count(DISTINCT day) on the integers behind it (engine/aggregate.rs).
            .with_optimizer_rule(Arc::new(crate::engine::aggregate::DistinctCountOnIntegers))
            .with_optimizer_rule(Arc::new(crate::engine::utc_date::rule()))
            // A CASE of columns and comparisons computed on every row, each row's value taken in
            // one pass, not filtered branch by branch (engine/eager_case.rs).
            .with_optimizer_rule(Arc::new(crate::engine::eager_case::rule()))
            // A join with a row of constants (a job's bound parameters) becomes a filter and
            // columns (engine/cross_join.rs).
            .with_optimizer_rule(Arc::new(crate::engine::cross_join::ConstantRowAsColumns))
            // Per-customer row_number/lead/lag computed run by run (engine/window.rs); a worker
            // is sent it through engine/codec.rs.
            .with_physical_optimizer_rule(Arc::new(crate::engine::window::SortedRunWindows))
            // A sort of one stream (a global window's) spread over the cores and merged
            // (engine/parallel_sort.rs).
            .with_physical_optimizer_rule(Arc::new(
                crate::engine::parallel_sort::ParallelSorts::over(crate::project::config::cores()),
            ))
            // A cross join with one row keeps that row in memory (engine/cross_join.rs).
            .with_physical_optimizer_rule(Arc::new(crate::engine::cross_join::CollectTheSingleRow))
            // A join with an aggregate grouped by its key looks each probe row up, with no copy
            // of the probe side (engine/lookup_join.rs); a worker is sent it through
            // engine/codec.rs.
            .with_physical_optimizer_rule(Arc::new(crate::engine::lookup_join::UniqueKeyJoins));
        // `extract` planned as retention's date_part (engine/date_part.rs), before DataFusion's.
        if let Some(planners) = builder.expr_planners() {
            planners.insert(
                0,
                Arc::new(crate::engine::date_part::ExtractPlanner::default()),
            );
        }
        if let Placement::Cluster(cluster) = placement {
            builder = crate::engine::cluster::coordinator(
                builder,
                cluster,
                self.worker_token.as_ref(),
                self.worker_tls.as_ref(),
            )?;
        }
        let mut state = builder.build();
        register_functions(&mut state)?;
        let ctx = SessionContext::new_with_state(state);
        for (name, provider) in tables {
            ctx.register_table(name.as_str(), provider.clone())?;
        }
        Ok(ctx)
    }

    /// `ctx`'s state planning locally again: what Delta's writer plans a distributed job's
    /// publish with (the job's query, already distributed, is the scan it writes).
    pub fn local_state(ctx: &SessionContext) -> SessionState {
        SessionStateBuilder::new_from_existing(ctx.state())
            .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
            .build()
    }

    /// Let every hook prepare `ctx` before SQL is planned in it (views over registered tables).
    pub async fn prepare(&self, ctx: &SessionContext) -> Result<()> {
        for hook in &self.hooks {
            hook.prepare(ctx).await?;
        }
        Ok(())
    }
}

/// Where a session's queries execute.
enum Placement<'a> {
    Local,
    Cluster(&'a Cluster),
}

/// Retention's SQL functions, added to `state` (a job's session, or a worker's, which decodes
/// them by name).
pub fn register_functions(state: &mut SessionState) -> Result<()> {
    let mut scalars = crate::engine::udf::all();
    // Replaces DataFusion's to_char, with a fast path for months and days.
    scalars.push(crate::engine::to_char::udf());
    // Replaces DataFusion's date_part (and so `extract`), with a fast path for years, months and
    // days of dates and UTC timestamps.
    scalars.push(crate::engine::date_part::udf());
    // What `CAST(ts AS DATE)` of a UTC timestamp is planned as (engine::utc_date).
    scalars.push(crate::engine::utc_date::udf());
    // What a CASE of columns and comparisons is planned as (engine::eager_case).
    scalars.push(crate::engine::eager_case::udf());
    scalars.extend(crate::engine::clv::sql::scalars());
    for f in scalars {
        state.register_udf(Arc::new(f))?;
    }
    let mut aggregates = crate::engine::clv::sql::aggregates();
    // Replaces DataFusion's percentile_cont, which panics when a partial aggregate stops.
    aggregates.push(crate::engine::percentile::udaf());
    // Replace DataFusion's min and max, whose string groups allocate a value each.
    aggregates.extend(crate::engine::min_max::udafs());
    for f in aggregates {
        state.register_udaf(Arc::new(f))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::Expr;
    use datafusion::prelude::DataFrame;

    use crate::project::config::{Overrides, RawProject};
    use crate::project::spec::JobSpec;

    fn engine(toml_text: &str) -> Engine {
        let raw: RawProject = toml::from_str(toml_text).unwrap();
        let over = Overrides::with_storage(
            Some("memory:///raw/".into()),
            Some("memory:///curated/".into()),
        );
        let project = Project::from_raw(
            std::path::Path::new("/p"),
            std::path::Path::new("/p/retention.toml"),
            raw,
            &over,
        )
        .unwrap();
        Engine::new(project, Stores::default()).unwrap()
    }

    #[test]
    fn sessions_get_retentions_defaults_and_the_projects_settings() {
        let e = engine("[datafusion]\n\"execution.batch_size\" = 1234\n");
        let config = e.config().unwrap();
        let options = config.options();
        assert_eq!(options.execution.batch_size.to_string(), "1234");
        assert!(options.execution.parquet.schema_force_view_types);
        assert_eq!(options.optimizer.hash_join_inlist_pushdown_max_size, 0);
        assert!(options.catalog.information_schema);
        let plain = engine("").config().unwrap();
        assert_eq!(
            plain.options().execution.batch_size.to_string(),
            BATCH_ROWS.to_string()
        );
        // At least 8 partitions, one per core beyond; the project's own number wins.
        if std::env::var_os("DATAFUSION_EXECUTION_TARGET_PARTITIONS").is_none() {
            let cores = std::thread::available_parallelism().unwrap().get();
            assert_eq!(plain.target_partitions(), cores.max(8));
        }
        let three = engine("[engine]\ntarget_partitions = 3\n")
            .config()
            .unwrap();
        assert_eq!(three.target_partitions(), 3);
    }

    #[tokio::test]
    async fn sessions_have_the_udfs_and_the_hooks_run() {
        #[derive(Default)]
        struct Counting(AtomicUsize);
        #[async_trait]
        impl SessionHook for Counting {
            async fn prepare(&self, _ctx: &SessionContext) -> Result<()> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            async fn job_output(
                &self,
                _ctx: &SessionContext,
                _spec: &JobSpec,
                df: DataFrame,
            ) -> Result<DataFrame> {
                Ok(df)
            }
        }
        let hook = Arc::new(Counting::default());
        let e = engine("").with_hook(hook.clone());
        let ctx = e.session(&[]).unwrap();
        let batches = ctx
            .sql("SELECT round_half_even(CAST(0.125 AS DECIMAL(10,3))) AS v")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(batches[0].num_rows(), 1);
        // DataFusion's date_part and to_char are replaced by the ones with fast paths.
        let date_part = ctx.udf("date_part").unwrap();
        let date_part: &dyn std::any::Any = date_part.inner().as_ref();
        assert!(date_part.is::<crate::engine::fast_path::WithFastPath>());
        // `extract` too, which DataFusion plans with its own function past the registry.
        let plan = ctx
            .sql("SELECT extract(month FROM now()) AS m")
            .await
            .unwrap()
            .into_unoptimized_plan();
        let datafusion::logical_expr::LogicalPlan::Projection(projection) = &plan else {
            panic!("{plan}");
        };
        let mut planned_with = None;
        projection.expr[0]
            .apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.name() == "date_part"
                {
                    let inner: &dyn std::any::Any = f.func.inner().as_ref();
                    planned_with = Some(inner.is::<crate::engine::fast_path::WithFastPath>());
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })
            .unwrap();
        assert_eq!(planned_with, Some(true), "{plan}");
        let to_char = ctx.udf("to_char").unwrap();
        let to_char: &dyn std::any::Any = to_char.inner().as_ref();
        assert!(to_char.is::<crate::engine::fast_path::WithFastPath>());
        e.prepare(&ctx).await.unwrap();
        e.prepare(&ctx).await.unwrap();
        assert_eq!(hook.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_clock_is_injected() {
        let t = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let e = engine("").with_clock(Arc::new(crate::clock::FixedClock(t)));
        assert_eq!(e.clock.now(), t);
    }
}
