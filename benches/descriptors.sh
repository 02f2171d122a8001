#!/usr/bin/env bash
# What a user who opens many descriptors does to the daemon's polls: PROCS processes (15
# by default) each hold 19,900 descriptors of /dev/null (under the usual hard limit of
# 20,000 a process: about 300,000 in all), one listener stands in for a machine's
# services, and the daemon runs for 20 s with `owner_sweep = "1s"`, so that every second
# it reads every fd table to the end. Prints the `max late` of its stopping record: how
# late the latest poll started, in the worst case. In a network namespace of its own.
#
#   benches/descriptors.sh [PROCS] [BINARY]        (as root, from the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
procs=${1:-15}
cargo build --release --locked --bin portsentinel --example listen >&2
bin=${2:-target/release/portsentinel}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf '[daemon]\nowner_sweep = "1s"\nnamespaces = "host"\ninstant = "off"\nstate_directory = "%s"\n[events]\nsocket = ""\n' \
  "$dir" > "$dir/config.toml"
unshare --net -- bash -c '
  set -eu
  ip link set lo up
  procs=$1 bin=$2 dir=$3
  for _ in $(seq "$procs"); do
    python3 -c "import os, sys, time
fds = [os.open(\"/dev/null\", os.O_RDONLY) for _ in range(19900)]
print(\"ready\", flush=True)
time.sleep(600)" >> "$dir/hogs" 2>/dev/null &
    hogs="${hogs:-} $!"
  done
  target/release/examples/listen --wait tcp:127.0.0.1:0 > /dev/null 2>&1 &
  listener=$!
  until [ "$(grep -c ready "$dir/hogs" 2>/dev/null)" = "$procs" ]; do sleep 0.2; done
  echo "descriptors open: $(cat /proc/sys/fs/file-nr | cut -f1)"
  "$bin" run --log text --config "$dir/config.toml" 2> "$dir/daemon.log" &
  daemon=$!
  sleep 20
  kill -TERM "$daemon"; wait "$daemon" || true
  grep -o "max late [0-9]* ms" "$dir/daemon.log" | tail -1
  kill $hogs "$listener"
' bash "$procs" "$bin" "$dir"
