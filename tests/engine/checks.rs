//! Data checks run on the result before publishing, and the not-null contract.

use super::*;

const CUSTOMER_VALUE_CHECKS: &str = r#"
description = "Value per customer."

# Passes: every completed order is counted once (reads another input: `orders`).
[[checks]]
name = "orders_tie_out"
description = "orders summed over customers equal completed orders"
sql = """
SELECT a.n AS summed, b.n AS completed
FROM (SELECT sum(orders) AS n FROM customer_value) a,
     (SELECT count(*) AS n FROM orders WHERE status = 'completed') b
WHERE a.n <> b.n
"""
"#;

#[tokio::test]
async fn checks_pass_or_fail_the_job_before_publishing() {
    let (fx, _) = published().await;
    write(fx.dir(), "jobs/customer_value.toml", CUSTOMER_VALUE_CHECKS);
    fx.cmd(&["validate"]).await.unwrap();
    fx.cmd(&["run", "customer_value"]).await.unwrap();
    assert_eq!(fx.version("customer_value").await, Some(1));
    let after_pass = fx.snapshot().await;

    // A failing check: names the check, shows the violating row, and publishes nothing.
    let failing = format!(
        "{CUSTOMER_VALUE_CHECKS}\n[[checks]]\nname = \"one_order_each\"\ndescription = \"no repeat buyers\"\nsql = \"SELECT customer_id, orders FROM customer_value WHERE orders > $max_orders\"\n[params]\nmax_orders = 1\n"
    );
    write(fx.dir(), "jobs/customer_value.toml", &failing);
    let err = fx.cmd(&["run", "+channel_value"]).await.unwrap_err();
    assert_eq!(err.to_string(), "2 of 2 job(s) failed");
    assert_eq!(fx.snapshot().await, after_pass);
    let msg = fx
        .rows("select job, status, error from _runs where status <> 'succeeded'")
        .await;
    assert!(
        msg.contains("customer_value|failed|job `customer_value`: check `one_order_each` failed (no repeat buyers): 1 violating row(s), e.g. (customer_id=1, orders=2); nothing was published"),
        "{msg}"
    );
    assert!(msg.contains("channel_value|skipped|"), "{msg}");
    // A check that does not plan is a validate error naming the spec file and the check.
    write(
        fx.dir(),
        "jobs/customer_value.toml",
        &failing.replace("WHERE orders >", "WHERE orderz >"),
    );
    let err = fx.cmd(&["validate"]).await.unwrap_err().to_string();
    assert!(
        err.contains("job `customer_value (check `one_order_each`)`") && err.contains("orderz"),
        "{err}"
    );
}

#[tokio::test]
async fn nulls_in_a_not_null_column_break_the_contract() {
    // `status` is declared not null; one partition has a null status.
    let status = Arc::new(StringArray::from(vec![Some("completed"), None]));
    broken_orders_partition(
        "2026-02-22",
        parquet(&orders_with_column("status", status)),
        &[
            "source `orders`: column `status`: declared not null but 1 value(s) are null in file",
            "dt=2026-02-22/part-0.parquet",
        ],
    )
    .await;
}
