//! Crash test: SIGKILL the real binary at random points of a run, many times.

use super::*;

/// The second data set: changes every table's rows, within the same months.
async fn write_changed_data(fx: &Fixture) {
    fx.put_raw(
        "orders/dt=2026-01-05/part-0.parquet",
        parquet(&orders_batch(&[
            (1, 1, 1100, 100, "completed"),
            (2, 2, 2050, 0, "completed"),
            (9, 3, 500, 0, "completed"),
        ])),
    )
    .await;
    fx.put_raw(
        "orders/dt=2026-02-02/part-0.parquet",
        parquet(&orders_batch(&[
            (4, 3, 10000, 1000, "completed"),
            (5, 1, 775, 75, "cancelled"),
        ])),
    )
    .await;
}

fn run_binary(fx: &Fixture) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_retention"));
    cmd.args([
        "-C",
        &fx.dir().display().to_string(),
        "--raw",
        fx.raw.as_str(),
        "--curated",
        fx.curated.as_str(),
        "run",
        "--all",
    ])
    .env("RUST_LOG", "off")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    cmd
}

/// Each curated table's version and rows.
async fn table_states(fx: &Fixture) -> Vec<(Option<u64>, String)> {
    let mut out = Vec::new();
    for t in CURATED_TABLES {
        let v = fx.version(t).await;
        let rows = if v.is_some() {
            fx.rows(&format!("select * from {t}")).await
        } else {
            String::new()
        };
        out.push((v, rows));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_exposes_partial_tables() {
    use rand::{Rng, SeedableRng};
    // Expected contents of each data set, from uninterrupted runs in a reference lake.
    let reference = Fixture::new(Backend::Local).unwrap();
    reference.write_hand_data().await;
    assert!(run_binary(&reference).status().unwrap().success());
    let expected_old: Vec<String> = table_states(&reference)
        .await
        .into_iter()
        .map(|s| s.1)
        .collect();
    write_changed_data(&reference).await;
    let clock = std::time::Instant::now();
    assert!(run_binary(&reference).status().unwrap().success());
    let run_ms = clock.elapsed().as_millis() as u64;
    let expected_new: Vec<String> = table_states(&reference)
        .await
        .into_iter()
        .map(|s| s.1)
        .collect();
    assert_ne!(expected_old, expected_new);

    let fx = Fixture::new(Backend::Local).unwrap();
    fx.write_hand_data().await;
    assert!(run_binary(&fx).status().unwrap().success());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261124);
    let kills = 40;
    let mut completed_tables = 0;
    for i in 0..kills {
        // Alternate the data so every kill sits between two different contents.
        let expected_now = if i % 2 == 0 {
            write_changed_data(&fx).await;
            &expected_new
        } else {
            fx.write_hand_data().await;
            &expected_old
        };
        let before = table_states(&fx).await;
        let delay = rng.random_range(0..run_ms.max(50) * 5 / 4);
        let mut child = run_binary(&fx).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let after = table_states(&fx).await;
        for (k, t) in CURATED_TABLES.iter().enumerate() {
            let (v_before, rows_before) = &before[k];
            let (v_after, rows_after) = &after[k];
            // The previous version still reads back exactly.
            assert_eq!(
                &rows_at_version(&fx, t, v_before.unwrap()).await,
                rows_before,
                "kill {i} after {delay} ms: {t} v{v_before:?} changed"
            );
            // The latest version is either the old rows or the complete new rows.
            if v_after == v_before {
                assert_eq!(
                    rows_after, rows_before,
                    "kill {i}: {t} changed without a new version"
                );
            } else {
                completed_tables += 1;
                assert_eq!(
                    rows_after, &expected_now[k],
                    "kill {i} after {delay} ms: {t} v{v_after:?} is not the complete new result"
                );
            }
        }
    }
    // The rerun publishes exactly what an uninterrupted run does.
    write_changed_data(&fx).await;
    assert!(run_binary(&fx).status().unwrap().success());
    let final_rows: Vec<String> = table_states(&fx).await.into_iter().map(|s| s.1).collect();
    assert_eq!(final_rows, expected_new);
    println!(
        "{kills} kills over a {run_ms} ms run; {completed_tables} table publishes completed before a kill"
    );
}
