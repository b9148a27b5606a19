//! The SQL test runner itself: a wrong expected row fails its file, `--complete` rewrites it.
//! (The project's own tests/sql/*.slt files run as the `sql` test target, one test per file.)

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expected_row_fails_the_sql_test() {
    let ws = repository_workspace();
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("wrong.slt");
    write(
        dir.path(),
        "wrong.slt",
        "statement ok\nINSERT INTO orders VALUES (1, 1, '2026-01-05T10:00:00Z', 'north', 'home', 40.00, 0.00, 0.00, NULL, 'completed', '2026-01-05')\n\n\
         statement ok\nRUN JOB order_experience\n\nquery IR\nSELECT order_id, net_revenue FROM order_experience\n----\n1 41.00\n",
    );
    let err = retention::sqltest::run_file(ws.clone(), &file, false)
        .await
        .unwrap_err();
    assert!(err.contains("1 40.00"), "{err}");
    // --complete rewrites the expectation from the actual rows, after which the file passes.
    retention::sqltest::run_file(ws.clone(), &file, true)
        .await
        .unwrap();
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("----\n1 40.00")
    );
    retention::sqltest::run_file(ws, &file, false)
        .await
        .unwrap();
}
