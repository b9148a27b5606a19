//! Incremental jobs: a spec with `kind = "incremental"` computes its table by time interval (a day
//! or a month of `time_column`). This module owns the validated settings and the interval
//! arithmetic: which range a run recomputes, from the intervals the ledger says are done, the
//! `lookback` intervals for late data, and the interval holding the run's as-of day.

use chrono::{Datelike, Months, NaiveDate};
use serde::Deserialize;

/// The interval an incremental job computes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    Day,
    Month,
}

impl Grain {
    /// The first day of the interval holding `day`.
    pub fn floor(self, day: NaiveDate) -> NaiveDate {
        match self {
            Grain::Day => day,
            Grain::Month => day.with_day(1).expect("day 1 exists"),
        }
    }

    /// The first day of the interval after the one starting at `start`.
    pub fn next(self, start: NaiveDate) -> NaiveDate {
        match self {
            Grain::Day => start.succ_opt().expect("a next day"),
            Grain::Month => start + Months::new(1),
        }
    }

    /// The first day of the interval `n` intervals before the one starting at `start`.
    pub fn back(self, start: NaiveDate, n: u32) -> NaiveDate {
        match self {
            Grain::Day => start - chrono::Duration::days(i64::from(n)),
            Grain::Month => start - Months::new(n),
        }
    }
}

/// A validated incremental spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incremental {
    /// The output column holding each row's interval: a DATE (the interval's first day) or a
    /// string (`YYYY-MM-DD` by day, `YYYY-MM` by month).
    pub time_column: String,
    pub grain: Grain,
    /// Intervals before the newest one recomputed on every run, for late data.
    pub lookback: u32,
    /// The first interval of a full rebuild.
    pub start: NaiveDate,
}

/// A run's days `[start, end)`, whole intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// What a run of an incremental job recomputes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Everything from `start` through the as-of interval, replacing the whole table.
    Rebuild(Range),
    /// These intervals only, replacing just them.
    Intervals(Range),
}

impl Work {
    pub fn range(&self) -> Range {
        match self {
            Work::Rebuild(r) | Work::Intervals(r) => *r,
        }
    }
}

impl Incremental {
    /// The work for a run as of `as_of`, given the ranges done since the table was last rebuilt
    /// with the current SQL and spec (`None`: never, or they changed: rebuild). The range runs
    /// from `lookback` intervals before the first interval not done (a gap), or before the
    /// interval holding `as_of` when there is none, through that interval; an interval done in
    /// between is recomputed too.
    pub fn work(&self, as_of: NaiveDate, done: Option<&[Range]>) -> Work {
        let last = self.grain.floor(as_of).max(self.start);
        let end = self.grain.next(last);
        let Some(done) = done else {
            return Work::Rebuild(Range {
                start: self.start,
                end,
            });
        };
        let is_done = |day: NaiveDate| done.iter().any(|r| r.start <= day && day < r.end);
        let mut first_missing = None;
        let mut day = self.start;
        while day < end {
            if !is_done(day) {
                first_missing = Some(day);
                break;
            }
            day = self.grain.next(day);
        }
        // Late data for the intervals before a gap (the days since the last run, or one whose run
        // failed) arrived during it: look back from the gap too.
        let newest_missing = first_missing.map_or(last, |m| m.min(last));
        let start = self
            .grain
            .back(newest_missing, self.lookback)
            .max(self.start);
        Work::Intervals(Range { start, end })
    }
}

/// Whether `day` starts an interval of `grain`.
pub fn is_aligned(grain: Grain, day: NaiveDate) -> bool {
    grain.floor(day) == day
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn daily(lookback: u32) -> Incremental {
        Incremental {
            time_column: "order_day".into(),
            grain: Grain::Day,
            lookback,
            start: d("2026-01-01"),
        }
    }

    fn range(a: &str, b: &str) -> Range {
        Range {
            start: d(a),
            end: d(b),
        }
    }

    #[test]
    fn the_first_run_and_a_changed_spec_rebuild_everything() {
        assert_eq!(
            daily(3).work(d("2026-01-10"), None),
            Work::Rebuild(range("2026-01-01", "2026-01-11"))
        );
    }

    #[test]
    fn a_run_recomputes_the_new_day_and_the_lookback() {
        let done = [range("2026-01-01", "2026-01-11")];
        assert_eq!(
            daily(3).work(d("2026-01-11"), Some(&done)),
            Work::Intervals(range("2026-01-08", "2026-01-12"))
        );
        // Nothing new: the lookback only.
        assert_eq!(
            daily(0).work(d("2026-01-10"), Some(&done)),
            Work::Intervals(range("2026-01-10", "2026-01-11"))
        );
    }

    #[test]
    fn a_gap_is_filled_from_its_first_day() {
        // The 4th failed; later days succeeded. The 2 days before it are recomputed too.
        let done = [
            range("2026-01-01", "2026-01-04"),
            range("2026-01-05", "2026-01-11"),
        ];
        assert_eq!(
            daily(2).work(d("2026-01-11"), Some(&done)),
            Work::Intervals(range("2026-01-02", "2026-01-12"))
        );
        // No run for a week: the lookback counts back from the first day not run, whose late
        // rows arrived during the week.
        let done = [range("2026-01-01", "2026-01-11")];
        assert_eq!(
            daily(3).work(d("2026-01-17"), Some(&done)),
            Work::Intervals(range("2026-01-08", "2026-01-18"))
        );
    }

    #[test]
    fn months_align_and_look_back() {
        let monthly = Incremental {
            grain: Grain::Month,
            lookback: 1,
            start: d("2025-11-01"),
            ..daily(0)
        };
        let done = [range("2025-11-01", "2026-01-01")];
        assert_eq!(
            monthly.work(d("2026-01-17"), Some(&done)),
            Work::Intervals(range("2025-12-01", "2026-02-01"))
        );
        assert!(is_aligned(Grain::Month, d("2026-03-01")));
        assert!(!is_aligned(Grain::Month, d("2026-03-02")));
        assert_eq!(Grain::Month.back(d("2026-01-01"), 13), d("2024-12-01"));
        // An as-of day before the start computes the first interval.
        assert_eq!(
            monthly.work(d("2025-01-05"), None),
            Work::Rebuild(range("2025-11-01", "2025-12-01"))
        );
    }
}
