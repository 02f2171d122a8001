#!/usr/bin/env bash
# What finding network namespaces through threads costs `scan`: `scan --json --netns all`
# (which reads every pid's namespace link and, since a thread may enter a namespace alone,
# every thread's) and `--netns host` (no discovery), with `ss -ltunp` beside them, timed
# by hyperfine on this machine as it is, then again beside one process of THREADS idle
# threads. The daemon does the
# same discovery once every 30 polls. Run as root from the repository:
#
#   benches/threads.sh [THREADS]            (2000 by default)
#   BIN=path/to/portsentinel benches/threads.sh   (another build, e.g. an older tree's)
#
# Installs hyperfine with apt-get when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2000}
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >&2
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --bin portsentinel >&2
  BIN=target/release/portsentinel
fi
out=$(mktemp)
holder=
trap 'rm -f "$out"; [ -n "$holder" ] && kill "$holder" 2>/dev/null || true' EXIT

measure() {
  hyperfine -N -w 3 -r 30 --export-markdown "$out" \
    "$BIN scan --json --netns all" "$BIN scan --json --netns host" "ss -ltunp" >/dev/null 2>&1
  tail -n +3 "$out" | sed "s/^/| $1 /"
}

echo "machine: $(nproc) cores, kernel $(uname -r), $(ls -d /proc/[0-9]*/task/* | wc -l) threads"
echo "| threads added | command | mean [ms] | min [ms] | max [ms] | relative |"
echo "|---|---|---:|---:|---:|---:|"
measure 0
python3 -c '
import sys, threading, time
stop = threading.Event()
for _ in range(int(sys.argv[1])):
    threading.Thread(target=stop.wait, daemon=True).start()
print("ready", flush=True)
time.sleep(3600)
' "$threads" > "$out.ready" &
holder=$!
until grep -q ready "$out.ready" 2>/dev/null; do sleep 0.1; done
rm -f "$out.ready"
measure "$threads"
