#!/usr/bin/env bash
# Fetch the CDNOW sample from the lifetimes wheel on PyPI (never committed) and land it as CSV
# under examples/cdnow/lake/raw/cdnow/. The file is whitespace-separated without a header; the
# only change is commas and a header naming the columns of jobs/sources.toml.
# Usage: bash examples/cdnow/fetch.sh   (needs python3 with pip)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${HOME}/.cache/retention-data/lifetimes-0.11.3"
mkdir -p "$cache" "$here/lake/raw/cdnow"
if [ ! -f "$cache/CDNOW_sample.txt" ]; then
  python3 -m pip download --no-deps --disable-pip-version-check -q lifetimes==0.11.3 -d "$cache"
  python3 - "$cache" <<'PY'
import glob, sys, zipfile
d = sys.argv[1]
z = zipfile.ZipFile(glob.glob(d + "/*.whl")[0])
open(d + "/CDNOW_sample.txt", "wb").write(z.read("lifetimes/datasets/CDNOW_sample.txt"))
PY
fi
{
  echo "full_id,customer_id,purchase_date,cds,dollar_value"
  awk 'NF == 5 { print $1 "," $2 "," $3 "," $4 "," $5 }' "$cache/CDNOW_sample.txt"
} > "$here/lake/raw/cdnow/cdnow_sample.csv"
echo "wrote $here/lake/raw/cdnow/cdnow_sample.csv ($(($(wc -l < "$here/lake/raw/cdnow/cdnow_sample.csv") - 1)) purchases)"
