//! The project's files, parsed and validated: `retention.toml`, the job specs `jobs/*.toml` with
//! their SQL, and the source contracts `jobs/sources.toml`.

pub mod config;
pub mod incremental;
pub mod location;
pub mod params;
pub mod run_policy;
pub mod sources;
pub mod spec;
