//! The DataFusion engine: sessions over the shared runtime, source contracts checked against
//! their files, a job's SQL planned with its parameters, data checks, the read-only guard for user
//! SQL, retention's SQL functions, and the hook through which higher layers take part.

pub mod checks;
pub mod contract;
pub mod guard;
pub mod hook;
pub mod job;
pub mod session;
pub mod udf;
