//! The DataFusion engine: sessions over the shared runtime (each job's memory counted), source
//! contracts checked against their files, source freshness, a job's SQL planned with its
//! parameters (its materialized CTEs computed once), data checks, the read-only guard for user SQL, retention's SQL functions, the customer-base models behind the
//! CLV functions (`clv`), the distributed engine (`cluster`, the coordinator's side, and
//! `worker`), and the hook through which higher layers take part.

pub mod aggregate;
pub mod checks;
pub mod cluster;
pub mod clv;
pub mod codec;
pub mod contract;
pub mod cross_join;
pub mod date_part;
pub mod eager_case;
pub mod fast_path;
pub mod freshness;
pub mod guard;
pub mod hook;
pub mod job;
pub mod lookup_join;
pub mod materialize;
pub mod memory;
pub mod min_max;
pub mod parallel_sort;
pub mod percentile;
pub mod profile;
pub mod rewrite;
pub mod session;
pub mod share_pool;
pub mod stand_in;
pub mod to_char;
pub mod udaf_override;
pub mod udf;
pub mod utc_date;
pub mod window;
pub mod worker;
