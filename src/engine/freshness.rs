//! Source freshness: the newest value of a source's freshness column, its age at the run's clock,
//! and whether that is fresh, a warning or an error by the source's rule. A `date` column (or a
//! `YYYY-MM-DD` partition column) counts as fresh until the end of its newest day.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::prelude::{cast, ident};

use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::project::sources::{Freshness, Source};

/// How fresh a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Fresh,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Fresh => "fresh",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One source's freshness at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub source: String,
    pub column: String,
    /// The newest instant the data reaches (`None`: no rows).
    pub newest: Option<DateTime<Utc>>,
    pub age: Option<Duration>,
    pub level: Level,
}

impl Finding {
    /// What an operator reads in the log, `_runs` and `status`.
    pub fn message(&self) -> String {
        match (self.newest, self.age) {
            (Some(newest), Some(age)) => format!(
                "source `{}`: newest {} is {} ({} old): {}",
                self.source,
                self.column,
                newest.to_rfc3339(),
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                self.level.as_str()
            ),
            _ => format!("source `{}`: no rows: {}", self.source, self.level.as_str()),
        }
    }
}

/// The level of data `age` old (`None`: no rows) under `rule`.
pub fn level(rule: &Freshness, age: Option<Duration>) -> Level {
    let past = |limit: Option<Duration>| match (limit, age) {
        (Some(_), None) => true,
        (Some(limit), Some(age)) => age > limit,
        (None, _) => false,
    };
    if past(rule.error_after) {
        Level::Error
    } else if past(rule.warn_after) || age.is_none() {
        Level::Warn
    } else {
        Level::Fresh
    }
}

/// Check `source` (read through `provider`) against its rule at `now`.
pub async fn check(
    engine: &Engine,
    source: &Source,
    rule: &Freshness,
    provider: Arc<dyn TableProvider>,
    now: DateTime<Utc>,
) -> Result<Finding> {
    let ctx = engine.session(&[(source.name.clone(), provider.clone())])?;
    let fail = |e: datafusion::error::DataFusionError| Error::Contract {
        table: source.name.clone(),
        message: format!("freshness of `{}`: {e}", rule.column),
        source: Some(Box::new(e)),
    };
    let whole_days = !matches!(
        provider
            .schema()
            .field_with_name(&rule.column)
            .map(|f| f.data_type().clone()),
        Ok(DataType::Timestamp(..))
    );
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let batches = ctx
        .table(source.name.as_str())
        .await
        .map_err(fail)?
        .aggregate(
            vec![],
            vec![max(cast(ident(&rule.column), utc)).alias("newest")],
        )
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    let newest = match batches.first().filter(|b| b.num_rows() > 0) {
        Some(b) => match ScalarValue::try_from_array(b.column(0), 0).map_err(fail)? {
            ScalarValue::TimestampMicrosecond(Some(us), _) => DateTime::from_timestamp_micros(us),
            _ => None,
        },
        None => None,
    }
    .map(|t| match whole_days {
        true => t + chrono::Duration::days(1),
        false => t,
    });
    let age = newest.map(|t| (now - t).to_std().unwrap_or(Duration::ZERO));
    Ok(Finding {
        source: source.name.clone(),
        column: rule.column.clone(),
        newest,
        age,
        level: level(rule, age),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_rule() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let both = Freshness {
            column: "t".into(),
            warn_after: Some(h(26)),
            error_after: Some(h(50)),
        };
        assert_eq!(level(&both, Some(h(1))), Level::Fresh);
        assert_eq!(level(&both, Some(h(26))), Level::Fresh);
        assert_eq!(level(&both, Some(h(27))), Level::Warn);
        assert_eq!(level(&both, Some(h(51))), Level::Error);
        assert_eq!(level(&both, None), Level::Error);
        let warn_only = Freshness {
            error_after: None,
            ..both
        };
        assert_eq!(level(&warn_only, Some(h(500))), Level::Warn);
        assert_eq!(level(&warn_only, None), Level::Warn);
    }
}
