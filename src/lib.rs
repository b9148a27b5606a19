//! retention: batch pipeline from marketplace raw data to curated trust, recovery and retention tables.

pub mod cli;
pub mod close;
pub mod config;
pub mod curated;
pub mod dag;
pub mod demo;
pub mod error;
pub mod export;
pub mod finance_data;
pub mod generate;
pub mod ledger;
pub mod runner;
pub mod schedule;
pub mod session;
pub mod sources;
pub mod spec;
pub mod sqltest;
pub mod storage;
pub mod udf;

pub use error::{Error, Result};
