//! Month close: finance freezes a month of every frozen table (`[close]` in its job spec) as an
//! immutable snapshot. `log` reads and writes the close log, `overlay` is the read side the engine
//! calls through its hook, and `month_close` closes and re-opens months by running jobs.

pub mod log;
pub mod month_close;
pub mod overlay;
