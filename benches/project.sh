# Sourced by the bench scripts: the release binary in $bin (or $RETENTION_BIN), and a throwaway copy of the project
# (retention.toml, jobs/, sql/) in $work/project, removed on exit.
bin="${RETENTION_BIN:-${CARGO_TARGET_DIR:-target}/release/retention}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/project/jobs"
cp retention.toml "$work/project/"
cp jobs/*.toml "$work/project/jobs/"
cp -r sql "$work/project/sql"
