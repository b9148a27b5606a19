//! `serve-sql`'s PostgreSQL endpoint with a real client: psql lists, describes and queries the
//! curated tables of a generated lake, is refused writes and wrong passwords, and meets the
//! limits (statement timeout, connections, memory) and TLS.

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use retention::sql_server::limits::QueryLimits;
use retention::sql_server::users::{PasswordHash, Users};
use retention::sql_server::{Endpoints, Running, SqlServerConfig, start};

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
        flight: None,
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
    // A hash join's build side cannot spill: past the pool it fails at once.
    let big = "SELECT count(*) FROM generate_series(1, 3000000) a(v) JOIN generate_series(1, 3000000) b(v) ON a.v = b.v";
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
    let both = Endpoints::default();
    let e = SqlServerConfig::new(settings("0.0.0.0:5433"), root, both, true).unwrap_err();
    assert!(
        e.to_string()
            .contains("--no-auth is only allowed on a loopback address"),
        "{e}"
    );
    let ok = SqlServerConfig::new(settings("127.0.0.1:5433"), root, both, true).unwrap();
    assert_eq!(ok.flight, Some("127.0.0.1:50051".parse().unwrap()));
    let e = SqlServerConfig::new(settings("127.0.0.1:5433"), root, both, false).unwrap_err();
    assert!(e.to_string().contains("no SQL users"), "{e}");
    let e = SqlServerConfig::new(settings("localhost"), root, both, true).unwrap_err();
    assert!(
        e.to_string().contains("serve_sql.pg") && e.to_string().contains("expected IP:PORT"),
        "{e}"
    );
}

/// The Flight SQL endpoint with arrow-flight's own client: login, the catalog calls (with and
/// without a catalog filter), SQL info, XDBC types, a query, a prepared statement, a refused write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_answers_the_calls_bi_drivers_make() {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use arrow_flight::sql::{
        CommandGetDbSchemas, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo,
    };
    use datafusion::arrow::array::AsArray;
    use futures::TryStreamExt;

    let (_lake, ws) = lake().await;
    let mut cfg = config(Some(analyst()));
    cfg.pg = None;
    cfg.flight = Some("127.0.0.1:0".parse().unwrap());
    let running = start(&ws, cfg).await.unwrap();
    let addr = running.flight.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);

    // No login, and a wrong password, are refused.
    let e = client.get_catalogs().await.unwrap_err().to_string();
    assert!(e.contains("login required"), "{e}");
    let e = client
        .handshake(USER, "wrong")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("password authentication failed for user"), "{e}");
    client.handshake(USER, PASSWORD).await.unwrap();

    async fn fetch(
        client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
        info: arrow_flight::FlightInfo,
    ) -> Vec<RecordBatch> {
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        client
            .do_get(ticket)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }
    let strings = |batches: &[RecordBatch], column: &str| -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let array = b.column_by_name(column).unwrap().as_string::<i32>().clone();
                (0..b.num_rows()).map(move |i| array.value(i).to_string())
            })
            .collect()
    };

    let info = client.get_catalogs().await.unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "catalog_name"),
        ["retention"]
    );
    // Schemas and tables without a catalog filter (datafusion-flight-sql-server 0.4.19 returned
    // nothing here).
    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = strings(&fetch(&mut client, info).await, "db_schema_name");
    assert!(
        schemas.contains(&"public".to_string()) && schemas.contains(&"closed".to_string()),
        "{schemas:?}"
    );
    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("cohort%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(strings(&batches, "table_name"), ["cohort_retention"]);
    assert_eq!(strings(&batches, "table_type"), ["TABLE"]);
    let ipc = batches[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>();
    let schema = datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer(ipc.value(0)).unwrap();
    assert_eq!(
        schema.field_with_name("net_revenue").unwrap().data_type(),
        &DataType::Decimal128(18, 2)
    );

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let types = strings(&fetch(&mut client, info).await, "type_name");
    assert!(
        types.contains(&"DECIMAL".to_string()) && types.contains(&"TIMESTAMP".to_string()),
        "{types:?}"
    );

    // A query, and the same as a prepared statement (the JDBC driver always prepares).
    let sql = "SELECT sum(net_revenue) AS total, count(*) AS n FROM cohort_retention";
    let expected = ws_rows(&ws, sql).await;
    let info = client.execute(sql.to_string(), None).await.unwrap();
    assert_eq!(render(&fetch(&mut client, info).await), expected);
    let mut prepared = client.prepare(sql.to_string(), None).await.unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(render(&fetch(&mut client, info).await), expected);
    prepared.close().await.unwrap();

    // With parameters: typed from the plan, bound as values, the same rows as the literal query.
    let by_channel = "SELECT months_since_first, sum(active_customers) AS active FROM cohort_retention \
                      WHERE acquisition_channel = $1 AND months_since_first <= $2 GROUP BY 1 ORDER BY 1";
    let mut prepared = client.prepare(by_channel.to_string(), None).await.unwrap();
    let params = prepared.parameter_schema().unwrap().clone();
    let types: Vec<String> = params
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    assert_eq!(types, ["$1 Utf8", "$2 Int64"]);
    let row = RecordBatch::try_new(
        Arc::new(params),
        vec![
            Arc::new(StringArray::from(vec!["search"])),
            Arc::new(Int64Array::from(vec![2])),
        ],
    )
    .unwrap();
    prepared.set_parameters(row).unwrap();
    let info = prepared.execute().await.unwrap();
    let literal = by_channel.replace("$1", "'search'").replace("$2", "2");
    let expected = ws_rows(&ws, &literal).await;
    assert_eq!(expected.lines().count(), 1 + 3, "{expected}");
    assert_eq!(render(&fetch(&mut client, info).await), expected);
    // A quote in a bound value is a value, never SQL.
    let row = RecordBatch::try_new(
        prepared.parameter_schema().unwrap().clone().into(),
        vec![
            Arc::new(StringArray::from(vec!["x' OR '1'='1"])),
            Arc::new(Int64Array::from(vec![2])),
        ],
    )
    .unwrap();
    prepared.set_parameters(row).unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(
        fetch(&mut client, info)
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        0
    );
    prepared.close().await.unwrap();

    let e = client
        .execute("CREATE TABLE t AS SELECT 1".to_string(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("DDL not supported") && e.contains("read-only"),
        "{e}"
    );
    running.stop().await;
}

/// Rows of `sql` over the workspace's curated tables, as `render` prints them.
async fn ws_rows(ws: &Workspace, sql: &str) -> String {
    let ctx = ws.query_session().await.unwrap();
    render(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// psycopg 3, SQLAlchemy with pandas and ADBC Flight SQL read every curated table exactly as
/// Python deltalake reads it (.ci/bi_clients.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_bi_clients_read_every_curated_table_exactly() {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import psycopg, sqlalchemy, pandas, adbc_driver_flightsql, deltalake",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(
            "needs psycopg, sqlalchemy, pandas, adbc-driver-flightsql and deltalake (.ci/run installs them)",
        );
        return;
    }
    let opts = retention::generate::GenerateOptions {
        seed: 5,
        customers: 600,
        months: 4,
        ..Default::default()
    };
    let (_lake, ws, _) = generated_lake(opts, &[]).await;
    let mut cfg = config(Some(analyst()));
    cfg.flight = Some("127.0.0.1:0".parse().unwrap());
    let running = start(&ws, cfg).await.unwrap();
    let mut tables: Vec<String> = ws
        .graph
        .nodes
        .iter()
        .map(|n| n.spec.table.clone())
        .collect();
    tables.push("_runs".into());
    let curated = ws.engine.project.curated.to_file_path().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/bi_clients.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(running.pg.unwrap().port().to_string())
        .arg(running.flight.unwrap().port().to_string())
        .args([USER, PASSWORD])
        .arg(curated)
        .args(&tables);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all clients agree"), "{text}");
    assert_eq!(text.matches("ok psycopg").count(), tables.len(), "{text}");
    running.stop().await;
}

/// `serve --sql`: the daemon and the PostgreSQL endpoint in one process. psql reads the tables and
/// the run the daemon's own schedule made, a write is refused, and one SIGTERM stops both with
/// exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_sql_answers_queries_beside_the_daemon_and_stops_on_sigterm() {
    if !has_psql() {
        return;
    }
    let fx = Fixture::new(Backend::Local).unwrap();
    fx.write_hand_data().await;
    fx.cmd(&["run", "--all"]).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_retention"))
        .args(["-C", &fx.dir().display().to_string()])
        .args(["--raw", fx.raw.as_str(), "--curated", fx.curated.as_str()])
        .args(["serve", "--no-http", "--sql", "--sql-no-auth"])
        .args([
            "--pg",
            &format!("127.0.0.1:{port}"),
            "--flight",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "serve --sql never listened on {addr}");
    let out = stdout(
        &psql(
            addr,
            "",
            "",
            &[
                "--csv",
                "-c",
                "SELECT customer_id, net_revenue FROM customer_value ORDER BY 1",
            ],
        )
        .await,
    );
    assert_eq!(out, "customer_id,net_revenue\n1,16.00\n2,20.50\n3,90.00\n");
    let e = stderr(&psql(addr, "", "", &["-c", "DROP TABLE customer_value"]).await);
    assert!(e.contains("25006") || e.contains("42501"), "{e}");
    // The daemon's start-up sweep runs daily_revenue's newest 06:00 slot; the endpoint sees it.
    let scheduled =
        "SELECT count(*) FROM _runs WHERE trigger = 'schedule' AND status = 'succeeded'";
    let mut seen = String::new();
    for _ in 0..100 {
        seen = stdout(&psql(addr, "", "", &["-At", "-c", scheduled]).await);
        if seen.trim() != "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen.trim(),
        "1",
        "the daemon's scheduled run is not in _runs"
    );
    let pid = daemon.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || daemon.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the endpoint outlived the daemon"
    );
}
