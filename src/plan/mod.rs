//! Planning: the workspace (the project loaded on an engine), the job graph, run plans and
//! `validate`. Nothing here reads data or writes tables.

pub mod graph;
pub mod run_plan;
pub mod validate;
pub mod workspace;
