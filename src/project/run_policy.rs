//! How the daemon runs a scheduled job: the time zone of its cron, its timeout and retries, what
//! happens to slots missed while no daemon ran, and whether it starts its downstream jobs. Parsed
//! once from the job spec's top-level keys into `RunPolicy`.

use std::time::Duration;

use serde::Deserialize;

/// Slots missed while no daemon was running: run none, only the newest, or every one in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    None,
    #[default]
    Latest,
    All,
}

/// A validated run policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPolicy {
    /// The time zone the cron is read in (default UTC).
    pub timezone: chrono_tz::Tz,
    /// A run still going after this is abandoned without publishing; the slot's lease lasts this
    /// long plus the daemon's lease margin (`serve --lease-margin`, default 2 minutes).
    pub timeout: Duration,
    /// How many times a transient failure is retried (backoff with jitter).
    pub retries: u32,
    pub catchup: Catchup,
    /// After a successful run, start the downstream jobs for the same slot.
    pub trigger_downstream: bool,
}

/// Default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `retries`.
pub const DEFAULT_RETRIES: u32 = 3;
/// How long a slot's lease outlives the run's timeout by default: room for the publish and the
/// ledger, and for the daemons' clocks to disagree.
pub const LEASE_MARGIN: Duration = Duration::from_secs(120);

impl Default for RunPolicy {
    fn default() -> Self {
        RunPolicy {
            timezone: chrono_tz::UTC,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            catchup: Catchup::default(),
            trigger_downstream: false,
        }
    }
}

impl RunPolicy {
    /// How long a lease on one of this job's slots lasts, `margin` past the timeout.
    pub fn lease_ttl(&self, margin: Duration) -> chrono::Duration {
        chrono::Duration::from_std(self.timeout + margin).unwrap_or(chrono::Duration::MAX)
    }
}

/// The spec's raw `timezone` and `timeout` checked; `Err((key, message))` names the bad key.
pub fn parse(
    timezone: Option<&str>,
    timeout: Option<&str>,
    retries: Option<u32>,
    catchup: Catchup,
    trigger_downstream: bool,
) -> Result<RunPolicy, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let mut policy = RunPolicy {
        retries: retries.unwrap_or(DEFAULT_RETRIES),
        catchup,
        trigger_downstream,
        ..RunPolicy::default()
    };
    if let Some(tz) = timezone {
        match tz.parse::<chrono_tz::Tz>() {
            Ok(tz) => policy.timezone = tz,
            Err(_) => problems.push((
                "timezone",
                format!("`{tz}` is not a time zone: expected an IANA name such as \"Europe/Berlin\" or \"UTC\""),
            )),
        }
    }
    if let Some(t) = timeout {
        match humantime::parse_duration(t) {
            Ok(d) if !d.is_zero() => policy.timeout = d,
            Ok(_) => problems.push(("timeout", "must be longer than zero".to_string())),
            Err(e) => problems.push((
                "timeout",
                format!("`{t}` is not a duration ({e}): expected e.g. \"90s\", \"30m\" or \"2h\""),
            )),
        }
    }
    if problems.is_empty() {
        Ok(policy)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parsed_values() {
        let p = parse(None, None, None, Catchup::Latest, false).unwrap();
        assert_eq!(p, RunPolicy::default());
        assert_eq!(p.lease_ttl(LEASE_MARGIN), chrono::Duration::seconds(3720));
        let p = parse(
            Some("Europe/Berlin"),
            Some("90s"),
            Some(0),
            Catchup::All,
            true,
        )
        .unwrap();
        assert_eq!(p.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(p.timeout, Duration::from_secs(90));
        assert_eq!(
            (p.retries, p.catchup, p.trigger_downstream),
            (0, Catchup::All, true)
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse(
            Some("Mars/Olympus"),
            Some("soon"),
            None,
            Catchup::None,
            false,
        )
        .unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, "timezone");
        assert!(
            e[0].1.starts_with("`Mars/Olympus` is not a time zone"),
            "{}",
            e[0].1
        );
        assert_eq!(e[1].0, "timeout");
        assert!(e[1].1.starts_with("`soon` is not a duration"), "{}", e[1].1);
        let e = parse(None, Some("0s"), None, Catchup::None, false).unwrap_err();
        assert_eq!(e, vec![("timeout", "must be longer than zero".to_string())]);
    }
}
