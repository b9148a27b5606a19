//! The distributed engine: a coordinator and two `retention worker` processes on 127.0.0.1 run the
//! repository's whole DAG over a generated lake, and every curated table is row for row what a
//! local run publishes; a worker refuses a coordinator without its token, and will not start
//! without one unless told to.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tempfile::TempDir;

const TOKEN: &str = "cluster-test-token-0123456789";

/// A `retention worker` child process, killed when dropped.
struct WorkerProcess {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WorkerProcess {
    /// Start a worker on a free port and wait for the address it prints.
    fn start(project: &Path, log: PathBuf, tls: Option<&Tls>) -> WorkerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_retention"));
        cmd.args(["-C", &project.display().to_string()]).args([
            "worker",
            "--listen",
            "127.0.0.1:0",
        ]);
        if let Some(tls) = tls {
            cmd.arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key)
                .env("RETENTION_WORKER_CA", &tls.ca);
        }
        let mut child = cmd
            .env("RETENTION_WORKER_TOKEN", TOKEN)
            .env("RUST_LOG", "retention=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("worker listening on ")
            .unwrap_or_else(|| panic!("worker printed {line:?}"))
            .to_string();
        WorkerProcess { child, url, log }
    }

    /// Plan fragments this worker has been sent (its debug log says one line each).
    fn fragments(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .matches("plan fragment received")
            .count()
    }

    fn log_has(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).unwrap().contains(text)
    }
}

/// The repository's jobs, with a planner setting that splits even this small lake's scans
/// into tasks (the default, 16 MiB per task, would keep every scan on one worker).
fn project(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let project = dir.join("project");
    for sub in ["jobs", "sql"] {
        std::fs::create_dir_all(project.join(sub)).unwrap();
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, project.join(sub).join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        project.join("retention.toml"),
        "[params]\nreporting_currency = \"USD\"\n\n[datafusion]\n\"distributed.file_scan_config_bytes_per_partition\" = 1024\n",
    )
    .unwrap();
    project
}

fn retention(project: &Path, raw: &str, curated: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retention"));
    cmd.args(["-C", &project.display().to_string()])
        .args(["--raw", raw, "--curated", curated])
        .args(args)
        .env("RUST_LOG", "off")
        .env_remove("RETENTION_WORKER_TOKEN");
    cmd
}

fn succeeded(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Each table's rows as sorted CSV lines.
fn tables(
    project: &Path,
    raw: &str,
    curated: &str,
    names: &[String],
    out_dir: &Path,
) -> Vec<(String, Vec<String>)> {
    names
        .iter()
        .map(|name| {
            let out = out_dir.display().to_string();
            let args = ["export", name, "--format", "csv", "--out", &out];
            succeeded(
                retention(project, raw, curated, &args).output().unwrap(),
                "export",
            );
            let text = std::fs::read_to_string(out_dir.join(format!("{name}.csv"))).unwrap();
            std::fs::remove_dir_all(out_dir).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            lines.sort();
            (name.clone(), lines)
        })
        .collect()
}

/// What a command printed: the run's summary on stdout gives each job's error.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn delta_commits(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("json".as_ref()))
        .count()
}

/// What `rows_read` the run ledger under `curated` has for order_experience's latest run.
fn rows_read(project: &Path, raw: &str, curated: &str) -> i64 {
    let sql = "SELECT rows_read FROM _runs WHERE job = 'order_experience' ORDER BY finished_at DESC LIMIT 1";
    let out = retention(project, raw, curated, &["query", sql, "--format", "csv"])
        .output()
        .unwrap();
    let text = succeeded(out, "query");
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// Generate a lake under `raw`, run the whole DAG locally into `dir/local`, then on two workers
/// into `distributed`, and check every table has the same rows, the workers did the work, and
/// the ledger counts what they read. Returns the workers and their addresses.
fn whole_dag_on_two_workers(
    dir: &Path,
    project: &Path,
    raw: &str,
    distributed: &str,
    tls: Option<&Tls>,
) -> ([WorkerProcess; 2], String) {
    let local = dir.join("local");
    let local = local.to_str().unwrap();
    let generate = ["generate", "--customers", "300", "--months", "4"];
    succeeded(
        retention(project, raw, local, &generate).output().unwrap(),
        "generate",
    );
    succeeded(
        retention(project, raw, local, &["run", "--all"])
            .output()
            .unwrap(),
        "local run",
    );
    let workers = [1, 2].map(|i| WorkerProcess::start(project, dir.join(format!("w{i}.log")), tls));
    let addresses = format!("{},{}", workers[0].url, workers[1].url);
    let run = retention(
        project,
        raw,
        distributed,
        &["--workers", &addresses, "run", "--all"],
    )
    .env("RETENTION_WORKER_TOKEN", TOKEN)
    .envs(tls.map(|t| ("RETENTION_WORKER_CA", &t.ca)))
    .output()
    .unwrap();
    let summary = succeeded(run, "distributed run");
    assert_eq!(summary.matches("succeeded").count(), 20, "{summary}");
    for w in &workers {
        assert!(w.fragments() > 0, "worker {} ran no fragment", w.url);
    }
    // retention's window operator went to the workers too (engine/codec.rs).
    assert!(
        workers.iter().any(|w| w.log_has("SortedWindowExec")),
        "no worker ran SortedWindowExec"
    );

    let mut names: Vec<String> = std::fs::read_dir(local)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('_'))
        .collect();
    names.sort();
    assert_eq!(names.len(), 20);
    let out_dir = dir.join("export");
    let expected = tables(project, raw, local, &names, &out_dir);
    let found = tables(project, raw, distributed, &names, &out_dir);
    for ((name, want), (_, got)) in expected.iter().zip(&found) {
        assert!(want.len() > 1, "{name} has no rows");
        assert_eq!(got, want, "table {name} differs from the local run");
    }

    // The run ledger has what the workers' scans read, folded back from their stages. At least
    // what a local run reads: a hash join's dynamic filter prunes its probe side's scan locally,
    // and does not cross from one stage to another.
    let (here, there) = (
        rows_read(project, raw, local),
        rows_read(project, raw, distributed),
    );
    assert!(here > 1000, "{here}");
    assert!(
        there >= here && there < 2 * here,
        "local {here}, distributed {there}"
    );
    (workers, addresses)
}

#[test]
fn the_whole_dag_on_two_workers_matches_a_local_run() {
    let dir = TempDir::new().unwrap();
    let project = project(dir.path());
    let raw = dir.path().join("raw");
    let distributed = dir.path().join("distributed");
    let (_workers, addresses) = whole_dag_on_two_workers(
        dir.path(),
        &project,
        raw.to_str().unwrap(),
        distributed.to_str().unwrap(),
        None,
    );

    // A coordinator without the token is refused, and the table keeps its version.
    let table = distributed.join("order_experience");
    let before = delta_commits(&table);
    let args = ["--workers", &addresses, "run", "order_experience"];
    let run = retention(
        &project,
        raw.to_str().unwrap(),
        distributed.to_str().unwrap(),
        &args,
    )
    .env("RETENTION_WORKER_TOKEN", "not-the-token-0123456789")
    .output()
    .unwrap();
    let said = said(&run);
    assert_eq!(run.status.code(), Some(1), "{said}");
    assert!(
        said.contains("needs the token in RETENTION_WORKER_TOKEN"),
        "{said}"
    );
    assert!(!said.contains("not-the-token"), "{said}");
    assert_eq!(delta_commits(&table), before);
}

/// The same on the S3 server `.ci/run` starts: raw and the distributed run's tables in the
/// bucket, which the workers reach with the credentials in their environment.
#[test]
fn the_whole_dag_on_two_workers_over_s3_matches_a_local_run() {
    let Ok(bucket) = std::env::var("RETENTION_TEST_S3_BUCKET") else {
        eprintln!("skipped: needs RETENTION_TEST_S3_BUCKET and AWS_ENDPOINT (.ci/run starts moto)");
        return;
    };
    let dir = TempDir::new().unwrap();
    let project = project(dir.path());
    let prefix = format!("s3://{bucket}/cluster-{}", uuid::Uuid::new_v4().simple());
    whole_dag_on_two_workers(
        dir.path(),
        &project,
        &format!("{prefix}/raw/"),
        &format!("{prefix}/distributed/"),
        None,
    );
}

/// A test CA and a worker certificate for 127.0.0.1 it signed, made with `openssl`.
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_tls(dir: &Path) -> Option<Tls> {
    let openssl = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]) && openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "w.key",
        "-out",
        "w.csr",
    ]) && openssl(&[
        "x509",
        "-req",
        "-in",
        "w.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "w.pem",
        "-extfile",
        "ext",
    ]);
    made.then(|| Tls {
        ca: dir.join("ca.pem"),
        cert: dir.join("w.pem"),
        key: dir.join("w.key"),
    })
}

/// The same over TLS: workers serve with a certificate, and the coordinator and the workers
/// trust its CA (`RETENTION_WORKER_CA`); a coordinator that does not is refused.
#[test]
fn the_whole_dag_on_two_workers_over_tls_matches_a_local_run() {
    let dir = TempDir::new().unwrap();
    let Some(tls) = make_tls(dir.path()) else {
        eprintln!("skipped: needs the openssl command to make test certificates");
        return;
    };
    let project = project(dir.path());
    let raw = dir.path().join("raw");
    let distributed = dir.path().join("distributed");
    let (raw, distributed) = (raw.to_str().unwrap(), distributed.to_str().unwrap());
    let (workers, addresses) =
        whole_dag_on_two_workers(dir.path(), &project, raw, distributed, Some(&tls));
    assert!(workers[0].url.starts_with("https://"), "{}", workers[0].url);
    // https:// addresses without the CA are refused at load; plain HTTP to a TLS worker fails.
    let plain = addresses.replace("https://", "http://");
    for (workers, says) in [
        (addresses.as_str(), "engine.worker_ca"),
        (plain.as_str(), "transport"),
    ] {
        let run = retention(
            &project,
            raw,
            distributed,
            &["--workers", workers, "run", "order_experience"],
        )
        .env("RETENTION_WORKER_TOKEN", TOKEN)
        .output()
        .unwrap();
        let said = said(&run);
        assert_ne!(run.status.code(), Some(0), "{said}");
        assert!(said.contains(says), "{says}: {said}");
    }
}

#[test]
fn a_worker_needs_a_token_or_no_auth() {
    let dir = TempDir::new().unwrap();
    let run = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_retention"));
        cmd.args(["-C", &dir.path().display().to_string()])
            .args(["worker", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "off")
            .env_remove("RETENTION_WORKER_TOKEN");
        if let Some(t) = token {
            cmd.env("RETENTION_WORKER_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    for (token, says) in [
        (None, "set RETENTION_WORKER_TOKEN"),
        (Some("short"), "at least 16 characters"),
    ] {
        let out = run(token);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}
