//! Independent readers (Python `deltalake`) and credentials that never leak.

use super::*;

#[tokio::test]
async fn python_deltalake_reads_what_query_returns() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import deltalake, pyarrow"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        skip("needs python3 with the deltalake and pyarrow packages (.ci/run installs them)");
        return;
    }
    let fx = Fixture::new(Backend::Local).unwrap();
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    fx.cmd(&["run", "customer_value"]).await.unwrap(); // a second version: readers must pick the latest
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/read_delta.py");
    for t in CURATED_TABLES {
        let url = curated::table_url(&fx.curated, t).unwrap();
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(url.to_file_path().unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let python = String::from_utf8(out.stdout).unwrap();
        assert_eq!(python, fx.rows(&format!("select * from {t}")).await, "{t}");
    }
}

#[tokio::test]
async fn credentials_never_appear_in_errors_or_logs() {
    let Ok(_) = std::env::var("RETENTION_TEST_S3_BUCKET") else {
        skip("needs the S3 test server (.ci/run starts moto)");
        return;
    };
    let fx = Fixture::new(Backend::Memory).unwrap();
    let secret = "Sup3rS3cretValueForTheTest";
    for level in ["info", "trace"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_retention"))
            .args([
                "-C",
                &fx.dir().display().to_string(),
                "--raw",
                "s3://no-such-bucket-for-retention/raw/",
            ])
            .args([
                "--curated",
                "s3://no-such-bucket-for-retention/curated/",
                "--log-format",
                "json",
                "run",
                "--all",
            ])
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_SESSION_TOKEN", "SessionTok3nForTheTest")
            .env("RUST_LOG", level)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            all.contains("no-such-bucket-for-retention"),
            "the error should name the location: {all}"
        );
        assert!(
            !all.contains(secret) && !all.contains("SessionTok3nForTheTest"),
            "secret leaked at RUST_LOG={level}"
        );
    }
}
