//! One module per command: its arguments, its examples, and the function that carries it out.

pub mod backfill;
pub mod close_month;
pub mod demo;
pub mod explain;
pub mod export;
pub mod generate;
pub mod optimize;
pub mod plan;
pub mod query;
pub mod report;
pub mod run;
pub mod runs;
pub mod serve;
pub mod serve_sql;
pub mod status;
pub mod test;
pub mod vacuum;
pub mod validate;
pub mod worker;
