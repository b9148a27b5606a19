//! retention: batch pipeline from marketplace raw data to curated trust, recovery and retention
//! tables. The modules follow the data: project files → source contracts and the engine → job
//! graph and run plan → execute (checks, publish) → run ledger, with the tools beside them.

// The foundation every layer uses.
#[cfg(not(target_env = "msvc"))]
pub mod allocator;
pub mod clock;
pub mod error;
pub mod listen;
pub mod redact;
pub mod values;

// The data's path.
pub mod engine;
pub mod execute;
pub mod ledger;
pub mod plan;
pub mod project;
pub mod store;

// The tools beside it.
pub mod close;
pub mod export;
pub mod generate;
pub mod report;
pub mod serve;
pub mod sql_server;
pub mod sqltest;

// Assembly and the command line.
pub mod app;
pub mod cli;

pub use error::{Error, Result};
