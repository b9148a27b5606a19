//! `serve-sql`'s PostgreSQL endpoint with a real client: psql lists, describes and queries the
//! curated tables of a generated lake, is refused writes and wrong passwords, and meets the
//! limits (statement timeout, connections, memory) and TLS.

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use retention::sql_server::limits::QueryLimits;
use retention::sql_server::users::{PasswordHash, Users};
use retention::sql_server::{Running, SqlServerConfig, start};

use super::*;

const USER: &str = "analyst";
const PASSWORD: &str = "correct horse battery";

fn has_psql() -> bool {
    let ok = Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("needs psql (Debian postgresql-client; .ci/run installs it)");
    }
    ok
}

fn config(users: Option<Users>) -> SqlServerConfig {
    SqlServerConfig {
        pg: Some("127.0.0.1:0".parse().unwrap()),
        users,
        tls: None,
        limits: QueryLimits {
            memory: Some(512 << 20),
            timeout: Duration::from_secs(60),
        },
        max_connections: 8,
        serve_raw: false,
    }
}

fn analyst() -> Users {
    let mut users = Users::default();
    users.add(USER, PasswordHash::new(PASSWORD));
    users
}

/// psql with `args`, as `user` with `password`, on a blocking thread (the server runs on this
/// test's runtime). `extra` adds connection options (`sslmode=require`).
async fn psql(addr: SocketAddr, password: &str, extra: &str, args: &[&str]) -> Output {
    let conninfo = format!(
        "host={} port={} user={USER} dbname=retention connect_timeout=10 {}",
        addr.ip(),
        addr.port(),
        if extra.is_empty() {
            "sslmode=disable"
        } else {
            extra
        }
    );
    let mut cmd = Command::new("psql");
    cmd.arg(conninfo)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"])
        .args(args)
        .env("PGPASSWORD", password);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    assert!(!o.status.success(), "expected a failure");
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A small generated lake with cohort_retention and what it reads.
async fn lake() -> (TempDir, Arc<Workspace>) {
    let opts = retention::generate::GenerateOptions {
        seed: 11,
        customers: 800,
        months: 4,
        ..Default::default()
    };
    let (lake, ws, _) = generated_lake(opts, &["+cohort_retention"]).await;
    (lake, ws)
}

async fn serve(ws: &Workspace, config: SqlServerConfig) -> (Running, SocketAddr) {
    let running = start(ws, config).await.unwrap();
    let addr = running.pg.unwrap();
    (running, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_lists_describes_and_queries_the_curated_tables() {
    if !has_psql() {
        return;
    }
    let (lake, ws) = lake().await;
    let (running, addr) = serve(&ws, config(Some(analyst()))).await;

    // \dt: the published tables, and nothing unpublished.
    let out = stdout(&psql(addr, PASSWORD, "", &["-c", "\\dt"]).await);
    for table in ["_runs", "cohort_retention", "order_experience"] {
        assert!(
            out.contains(&format!(" public | {table} ")),
            "{table}:\n{out}"
        );
    }
    assert!(!out.contains("churn_rate"), "{out}");

    // \d: columns, types and nullability from the Delta schema.
    let out = stdout(&psql(addr, PASSWORD, "", &["-c", "\\d cohort_retention"]).await);
    assert!(out.contains("Table \"public.cohort_retention\""), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
    };
    assert_eq!(
        line("net_revenue").unwrap()[1..4],
        ["numeric", "", "not null"]
    );
    assert_eq!(
        line("retention_rate").unwrap()[1..4],
        ["double precision", "", ""]
    );
    assert_eq!(line("cohort_month").unwrap()[1], "text");

    // Descriptions from the spec: the table's (\dt+) and a column's (\d+).
    let out = stdout(&psql(addr, PASSWORD, "", &["-c", "\\dt+ cohort_retention"]).await);
    assert!(
        out.contains("Acquisition cohorts (month of first completed order"),
        "{out}"
    );
    let out = stdout(&psql(addr, PASSWORD, "", &["-c", "\\d+ cohort_retention"]).await);
    assert!(
        out.contains("cumulative_net_revenue / cohort_size: the cohort's average net LTV to date."),
        "{out}"
    );

    // A query gives exactly what `retention query` gives, decimals digit for digit.
    let sql = "SELECT cohort_month, acquisition_channel, months_since_first, cohort_size, \
               net_revenue, cumulative_net_revenue_per_customer, retention_rate \
               FROM cohort_retention ORDER BY 1, 2, 3, first_order_bad_experience";
    let served = stdout(&psql(addr, PASSWORD, "", &["--csv", "-c", sql]).await);
    let direct = Command::new(env!("CARGO_BIN_EXE_retention"))
        .args(["-C", env!("CARGO_MANIFEST_DIR")])
        .args(["--raw", ws.engine.project.raw.as_str()])
        .args(["--curated", ws.engine.project.curated.as_str()])
        .args(["query", "--format", "csv", sql])
        .output()
        .unwrap();
    assert!(
        direct.status.success(),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    let direct = String::from_utf8(direct.stdout).unwrap();
    assert!(served.lines().count() > 20, "{served}");
    assert!(
        served.contains(".") && served.lines().nth(1).unwrap().contains("-"),
        "{served}"
    );
    // Floats are text of the same value, not always the same text ("0" on the wire, "0.0" in
    // `query`'s CSV): the last column (retention_rate) is compared as a number.
    let split = |text: &str| -> Vec<(String, Option<f64>)> {
        text.lines()
            .skip(1)
            .map(|l| {
                let (rest, rate) = l.rsplit_once(',').unwrap();
                (rest.to_string(), rate.parse().ok())
            })
            .collect()
    };
    assert_eq!(served.lines().next(), direct.lines().next());
    assert_eq!(split(&served), split(&direct));

    // Writes are refused with PostgreSQL's SQLSTATEs, and nothing is written.
    let e = stderr(&psql(addr, PASSWORD, "", &["-c", "CREATE TABLE t (x int)"]).await);
    assert!(
        e.contains("25006: cannot execute CREATE TABLE in a read-only session"),
        "{e}"
    );
    let target = lake.path().join("copied.csv");
    let copy = format!("COPY cohort_retention TO '{}'", target.display());
    let e = stderr(&psql(addr, PASSWORD, "", &["-c", &copy]).await);
    assert!(e.contains("42501: COPY is not allowed"), "{e}");
    assert!(!target.exists());
    let e = stderr(
        &psql(
            addr,
            PASSWORD,
            "",
            &["-c", "SET datafusion.execution.batch_size = 1"],
        )
        .await,
    );
    assert!(
        e.contains("42501: SET datafusion.execution.batch_size"),
        "{e}"
    );
    let e = stderr(
        &psql(
            addr,
            PASSWORD,
            "",
            &[
                "-c",
                "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/tmp/e.csv'",
            ],
        )
        .await,
    );
    assert!(
        e.contains("25006: cannot execute CREATE in a read-only session"),
        "{e}"
    );

    // A wrong password is refused, and so is an unknown user, the same way.
    let e = stderr(&psql(addr, "wrong", "", &["-c", "SELECT 1"]).await);
    assert!(
        e.contains("Password authentication failed for user \"analyst\""),
        "{e}"
    );
    running.stop().await;
}

/// A new Delta version is visible to the next query on an open connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_version_is_seen_by_the_next_query_and_limits_hold() {
    if !has_psql() {
        return;
    }
    let (_lake, ws) = lake().await;
    let mut cfg = config(None);
    cfg.limits.timeout = Duration::from_secs(2);
    cfg.max_connections = 1;
    let (running, addr) = serve(&ws, cfg).await;
    let count = "SELECT count(*) FROM _runs";
    let before: u64 = stdout(&psql(addr, "", "", &["-At", "-c", count]).await)
        .trim()
        .parse()
        .unwrap();

    // One psql session stays connected (the only connection allowed) while a job publishes.
    let conninfo = format!(
        "host={} port={} user=x dbname=retention sslmode=disable",
        addr.ip(),
        addr.port()
    );
    let mut session = std::process::Command::new("psql")
        .args([conninfo.as_str(), "-X", "-At"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = session.stdin.take().unwrap();
    use std::io::Write;
    writeln!(stdin, "{count};").unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A second connection is refused as PostgreSQL refuses it.
    let e = stderr(&psql(addr, "", "", &["-c", "SELECT 1"]).await);
    assert!(e.contains("53300") || e.contains("too many clients"), "{e}");
    run_jobs(&ws, &["order_experience"]).await;
    writeln!(stdin, "{count};").unwrap();
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || session.wait_with_output().unwrap())
        .await
        .unwrap();
    let seen: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(seen, vec![before, before + 1]);

    // The statement timeout cancels a long query; a client's shorter one wins.
    let long = "SELECT count(*) FROM generate_series(1, 3000000000) a";
    let e = stderr(&psql(addr, "", "", &["-c", long]).await);
    assert!(
        e.contains("57014: canceling statement due to statement timeout (2 s)"),
        "{e}"
    );
    let started = std::time::Instant::now();
    let e = stderr(
        &psql(
            addr,
            "",
            "",
            &["-c", "SET statement_timeout = '300ms'", "-c", long],
        )
        .await,
    );
    assert!(
        e.contains("57014: canceling statement due to statement timeout (0.3 s)"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_its_memory_fails_and_tls_connects() {
    if !has_psql() {
        return;
    }
    let (lake, ws) = lake().await;
    let cert = lake.path().join("cert.pem");
    let key = lake.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        skip("needs the openssl command to make a test certificate");
        return;
    }
    let mut cfg = config(Some(analyst()));
    cfg.limits.memory = Some(1 << 20);
    cfg.tls = Some((cert, key));
    let (running, addr) = serve(&ws, cfg).await;
    let out = stdout(&psql(addr, PASSWORD, "sslmode=require", &["-c", "\\conninfo"]).await);
    assert!(out.contains("SSL connection (protocol: TLSv1.3"), "{out}");
    let big = "SELECT v % 1000003 AS k, count(*) FROM generate_series(1, 3000000) t(v) GROUP BY 1 ORDER BY 1";
    let e = stderr(&psql(addr, PASSWORD, "sslmode=require", &["-c", big]).await);
    assert!(
        e.contains("53200:") && e.contains("Resources exhausted"),
        "{e}"
    );
    running.stop().await;
}

#[test]
fn no_auth_is_only_for_loopback_and_auth_needs_users() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = |pg: &str| retention::project::config::SqlServerSettings {
        pg: Some(pg.into()),
        ..Default::default()
    };
    let e = SqlServerConfig::new(settings("0.0.0.0:5433"), root, false, true).unwrap_err();
    assert!(
        e.to_string()
            .contains("--no-auth is only allowed on a loopback address"),
        "{e}"
    );
    assert!(SqlServerConfig::new(settings("127.0.0.1:5433"), root, false, true).is_ok());
    let e = SqlServerConfig::new(settings("127.0.0.1:5433"), root, false, false).unwrap_err();
    assert!(e.to_string().contains("no SQL users"), "{e}");
    let e = SqlServerConfig::new(settings("localhost"), root, false, true).unwrap_err();
    assert!(
        e.to_string().contains("serve_sql.pg") && e.to_string().contains("expected IP:PORT"),
        "{e}"
    );
}
