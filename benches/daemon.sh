#!/usr/bin/env bash
# The daemon's own cost, measured on a release build in a network namespace of its own:
# CPU over 60 s at the default interval with ~250 and 5,000 listeners (instant detection
# off and on), RSS, detection latency (bind() → record written) over 200 binds at 1 s and
# 100 ms by polls alone and at 1 s with instant detection, and two floods of 10,000
# sockets a second for 10 s, UDP binds to ports the kernel picks and one TCP port listened
# on and closed again and again (the daemon's CPU, the polls the events asked for, events
# lost, what was recorded).
#
#   benches/daemon.sh [CPU_SECONDS] [BINDS]        (as root, from the repository)
#   benches/daemon.sh floods                       (the floods alone)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = floods ]; then
  set -- --floods-only
else
  set -- --cpu-seconds "${1:-60}" --binds "${2:-200}"
fi
cargo build --release --locked --bin portsentinel --example daemon_bench >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
exec unshare --net -- sh -c '
  ip link set lo up
  exec target/release/examples/daemon_bench target/release/portsentinel "$@"
' sh "$@"
