//! The scheduler: firing times, job order within a day, and the daemon.

use super::*;

fn utc(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn schedule_runs_the_close_candidate_report_on_the_first_after_the_finance_jobs() {
    let project =
        Project::load(Path::new(env!("CARGO_MANIFEST_DIR")), &Overrides::default()).unwrap();
    let ws = retention::app::workspace(project, Stores::default()).unwrap();
    let firings = retention::schedule::firings(
        &ws,
        utc("2026-11-30T00:00:00Z"),
        utc("2026-12-03T00:00:00Z"),
    )
    .unwrap();
    let when = |job: &str| -> Vec<String> {
        firings
            .iter()
            .filter(|(_, jobs)| jobs.iter().any(|j| j == job))
            .map(|(at, _)| at.to_rfc3339())
            .collect()
    };
    assert_eq!(when("close_candidates"), vec!["2026-12-01T07:30:00+00:00"]);
    assert_eq!(
        when("budget_reconciliation"),
        vec![
            "2026-11-30T07:15:00+00:00",
            "2026-12-01T07:15:00+00:00",
            "2026-12-02T07:15:00+00:00"
        ]
    );
    // Every scheduled job fires after the scheduled jobs it reads, the same day.
    assert_eq!(
        retention::schedule::order_problems(&ws, utc("2026-11-30T00:00:00Z")).unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn schedule_fires_jobs_and_flags_a_job_scheduled_before_its_input() {
    let fx = Fixture::new(Backend::Memory).unwrap();
    fx.write_hand_data().await;
    // customer_value every second; channel_value (which reads it) at 05:00, before it at 06:00.
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "description = \"Value per customer.\"\nschedule = \"* * * * * *\"\n",
    );
    let ws = fx.workspace().await;
    assert!(
        retention::schedule::order_problems(&ws, utc("2026-11-30T00:00:00Z"))
            .unwrap()
            .is_empty()
    );
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "schedule = \"0 0 6 * * *\"\n",
    );
    write(
        fx.dir(),
        "jobs/channel_value.toml",
        &format!("schedule = \"0 0 5 * * *\"\n{CHANNEL_VALUE_TOML}"),
    );
    let late = fx.workspace().await;
    assert_eq!(
        retention::schedule::order_problems(&late, utc("2026-11-30T00:00:00Z")).unwrap(),
        vec!["job `channel_value` is scheduled at 05:00:00 UTC but reads `customer_value`, scheduled later that day: it would read the previous `customer_value`".to_string()]
    );

    // The daemon: customer_value fires every second; stop it after 4.5 s (at least two firings).
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        "description = \"Value per customer.\"\nschedule = \"* * * * * *\"\n",
    );
    write(fx.dir(), "jobs/channel_value.toml", CHANNEL_VALUE_TOML);
    let ws = Arc::new(fx.workspace().await);
    retention::schedule::serve(
        ws,
        1,
        tokio::time::sleep(std::time::Duration::from_millis(4500)),
    )
    .await
    .unwrap();
    let runs = fx
        .rows("select job, trigger, status, min(rows_written) as rows, count(*) >= 2 as repeated from _runs group by job, trigger, status")
        .await;
    assert_eq!(
        runs,
        "job|trigger|status|rows|repeated\ncustomer_value|schedule|succeeded|3|true"
    );
    assert_eq!(
        fx.rows("select * from customer_value order by 1").await,
        EXPECTED_CUSTOMER
    );
}
