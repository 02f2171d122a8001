#!/usr/bin/env bash
# Whole-process comparison of `portsentinel scan --json` with `ss -ltunp`, `netstat -ltunp`
# and `lsof -nP -iTCP -sTCP:LISTEN -iUDP`, on a socket table this script builds itself in
# a fresh network namespace. Run as root from the repository:
#
#   benches/compare.sh                 # the default table, listener holder started last
#   benches/compare.sh --order both    # both orders, one after the other
#
# The table (defaults): 5,000 listening sockets (90% TCP LISTEN, 10% unconnected UDP, ports
# 10000-14999 on 127.0.0.1) held by one process, plus 10,000 established loopback TCP
# connections (20,000 ESTABLISHED sockets) held by two more processes, 5,000 connections
# (10,000 descriptors) each: one process may hold at most 20,000 open files here. The
# holders are examples/socket_table.rs.
#
# Why the start order matters: portsentinel reads /proc/PID/fd tables only until every
# listening inode is found, new processes first, then processes of the socket's uid, then
# the rest, each group in pid order. `ss -p`, netstat and lsof read every fd of every
# process. So with the listener holder started LAST (the highest pid, after the 20,000
# connection descriptors) portsentinel has to read as much as ss does: that is the
# unfavourable case, and the default (--order last). --order first starts it first.
#
# Every measured command runs inside the namespace (hyperfine itself runs under
# `ip netns exec`), all of them in ONE hyperfine run (-N: no shell; output to /dev/null).
# The namespace only isolates sockets: /proc is still the host's pid namespace, so every
# host process's fd table is part of what ss/netstat/lsof (and portsentinel) read.
#
# Options (or the environment variables in brackets):
#   --order last|first|both   [ORDER=last]
#   --runs N                  [RUNS=20]        --warmup N   [WARMUP=3]
#   --listeners N             [LISTENERS=5000]
#   --connections N           [CONNECTIONS=10000]
#   --per-holder N            [PER_HOLDER=5000]  connections per holder process
#   --strace                  [STRACE=1]  also `strace -c -f` one scan and one `ss -ltunp`
#   --perf                    [PERF=1]    also `perf record -e cpu-clock` one scan (needs perf)
#   --results DIR             [RESULTS=benches/results]  (ignored by git)
#   --other PATH              [OTHER=]    another portsentinel binary (an older tree's),
#                                         timed in the same run: `other: scan --json` rows
#
# Installs hyperfine, net-tools, lsof, iproute2 and jq with apt-get when their commands are
# missing. Tears down the holders and the namespace on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

ORDER=${ORDER:-last}
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
LISTENERS=${LISTENERS:-5000}
CONNECTIONS=${CONNECTIONS:-10000}
PER_HOLDER=${PER_HOLDER:-5000}
PORT_BASE=${PORT_BASE:-10000}
ADDR=${ADDR:-127.0.0.1}
STRACE=${STRACE:-0}
PERF=${PERF:-0}
RESULTS=${RESULTS:-benches/results}
OTHER=${OTHER:-}

die() { echo "compare.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --order) ORDER=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --listeners) LISTENERS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --per-holder) PER_HOLDER=$2; shift 2 ;;
    --strace) STRACE=1; shift ;;
    --perf) PERF=1; shift ;;
    --results) RESULTS=$2; shift 2 ;;
    --other) OTHER=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case $ORDER in last|first|both) ;; *) die "--order must be last, first or both" ;; esac
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces; reading every process's fds)"
# socket_table refuses more than the fd limit allows; 2 fds per connection.
[ $((2 * PER_HOLDER + 16)) -le 20000 ] || echo "compare.sh: warning: --per-holder $PER_HOLDER needs $((2 * PER_HOLDER)) fds in one process (limit here: 20,000)" >&2

# ---------------------------------------------------------------- packages
need=("hyperfine:hyperfine" "netstat:net-tools" "lsof:lsof" "ss:iproute2" "ip:iproute2" "jq:jq")
missing=()
for pair in "${need[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
# Packages named only when missing: naming an installed one would upgrade it.
if [ ${#missing[@]} -gt 0 ]; then
  echo "compare.sh: installing ${missing[*]}" >&2
  apt-get update -q
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ "$STRACE" = 1 ] && ! command -v strace >/dev/null 2>&1; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends strace
fi

# ---------------------------------------------------------------- build
cargo build --release --locked --examples
cargo build --release --locked --bin portsentinel
BIN=${CARGO_TARGET_DIR:-target}/release
PS=$(readlink -f "$BIN/portsentinel")
HOLDER=$(readlink -f "$BIN/examples/socket_table")
SS=$(command -v ss) NETSTAT=$(command -v netstat) LSOF=$(command -v lsof)

mkdir -p "$RESULTS"
[ -e "$RESULTS/.gitignore" ] || printf '*\n' >"$RESULTS/.gitignore"
RESULTS=$(readlink -f "$RESULTS")
STAMP=$(date +%Y%m%d-%H%M%S)

# ---------------------------------------------------------------- teardown
NS="" WORK="" HOLDER_PIDS=()
teardown() {
  # Closing the shared fifo's last writer ends every holder (stdin EOF); kill stragglers.
  exec 9>&- 2>/dev/null || true
  local pid deadline=$((SECONDS + 5))
  for pid in "${HOLDER_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  HOLDER_PIDS=()
  if [ -n "$NS" ]; then ip netns del "$NS" 2>/dev/null || true; NS=""; fi
  if [ -n "$WORK" ]; then rm -rf "$WORK"; WORK=""; fi
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
in_ns() { ip netns exec "$NS" "$@"; }

# start_holder NAME ARGS...: starts a socket_table in the namespace and waits for `ready`.
start_holder() {
  local name=$1; shift
  # stdin: the fifo whose only writer is this shell's fd 9 (closed for the holder itself).
  ip netns exec "$NS" "$HOLDER" --name "$name" --addr "$ADDR" "$@" \
    <"$WORK/hold" >"$WORK/$name.out" 2>"$WORK/$name.err" 9>&- &
  local pid=$! deadline=$((SECONDS + 120))
  HOLDER_PIDS+=("$pid")
  until grep -q '^ready ' "$WORK/$name.out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || die "holder $name failed: $(cat "$WORK/$name.err")"
    [ $SECONDS -lt $deadline ] || die "holder $name not ready after 120 s"
    sleep 0.05
  done
  # `ip netns exec` execs the command: $! is the holder's own pid.
  local ready; ready=$(grep -m1 '^ready ' "$WORK/$name.out")
  case $ready in "ready pid=$pid "*) ;; *) die "holder $name: pid mismatch: $ready vs $pid" ;; esac
  echo "  $name: $ready"
}

# wait_table TCP UDP EST: until the namespace holds that many sockets.
wait_table() {
  local want_t=$1 want_u=$2 want_e=$3 t u e deadline=$((SECONDS + 60))
  while :; do
    t=$(in_ns "$SS" -Htln | wc -l)
    u=$(in_ns "$SS" -Huln | wc -l)
    e=$(in_ns "$SS" -Htn state established | wc -l)
    [ "$t" -eq "$want_t" ] && [ "$u" -eq "$want_u" ] && [ "$e" -eq "$want_e" ] && break
    [ $SECONDS -lt $deadline ] || die "table incomplete after 60 s: tcp listen $t/$want_t, udp $u/$want_u, established $e/$want_e"
    sleep 0.2
  done
  echo "  table: $t TCP LISTEN + $u UDP unconnected + $e TCP ESTABLISHED in namespace $NS"
}

# ---------------------------------------------------------------- one scenario
scenario() {
  local order=$1
  NS=psbench-$$-$order
  WORK=$(mktemp -d /tmp/psbench.XXXXXX)
  mkfifo "$WORK/hold"
  exec 9<>"$WORK/hold"
  ip netns add "$NS"
  ip -n "$NS" link set lo up

  local holders=$(((CONNECTIONS + PER_HOLDER - 1) / PER_HOLDER)) left=$CONNECTIONS i n
  local t0=$SECONDS
  echo
  echo "## Scenario: listener holder started ${order^^}"
  echo
  start_listeners() { start_holder st-listen --listeners "$LISTENERS" --port-base "$PORT_BASE"; }
  [ "$order" = first ] && start_listeners
  for ((i = 1; i <= holders; i++)); do
    n=$((left < PER_HOLDER ? left : PER_HOLDER)); left=$((left - n))
    start_holder "st-conn$i" --connections "$n"
  done
  [ "$order" = last ] && start_listeners
  local lpid; lpid=$(sed -n 's/^ready pid=\([0-9]*\).*/\1/p' "$WORK/st-listen.out")
  local ltcp; ltcp=$(sed -n 's/.* tcp=\([0-9]*\).*/\1/p' "$WORK/st-listen.out")
  local ludp; ludp=$(sed -n 's/.* udp=\([0-9]*\).*/\1/p' "$WORK/st-listen.out")
  wait_table "$ltcp" "$ludp" $((2 * CONNECTIONS))
  # What an owner search in /proc (pid) order reads before reaching the listener holder.
  # stat(/proc/PID/fd).st_size is the number of open fds (Linux 6.2 and later).
  local before
  before=$(for p in /proc/[0-9]*; do
      p=${p#/proc/}
      if [ "$p" -lt "$lpid" ]; then stat -c %s "/proc/$p/fd" 2>/dev/null || true; fi
    done | awk '{ n++; s += $1 } END { printf "%d processes holding %d fds", n, s }')
  echo "  built in $((SECONDS - t0)) s; before the listener holder (pid $lpid) in /proc order: $before"

  local json="$RESULTS/compare-$STAMP-$order.json" load0; load0=$(cut -d' ' -f1 /proc/loadavg)
  # -i: lsof 4.95 exits 1 when -iTCP -sTCP:LISTEN and -iUDP are combined, though its output
  # is complete. The other commands' exit status is checked in the counting runs below.
  local other=()
  if [ -n "$OTHER" ]; then
    other=(-n 'other: scan --json' "$OTHER scan --json"
      -n 'other: scan --json --netns host' "$OTHER scan --json --netns host")
  fi
  in_ns hyperfine -N -i --warmup "$WARMUP" --runs "$RUNS" --output=null --style basic \
    --export-json "$json" "${other[@]}" \
    -n 'portsentinel scan --json' "$PS scan --json" \
    -n 'portsentinel scan --json --netns host' "$PS scan --json --netns host" \
    -n 'ss -ltunp' "$SS -ltunp" \
    -n 'netstat -ltunp' "$NETSTAT -ltunp" \
    -n 'lsof -nP -iTCP -sTCP:LISTEN -iUDP' "$LSOF -nP -iTCP -sTCP:LISTEN -iUDP" \
    -n 'portsentinel scan --json --source proc-net' "$PS scan --json --source proc-net" \
    -n 'portsentinel scan --json --all-holders' "$PS scan --json --all-holders" \
    >"$WORK/hyperfine.log" 2>&1 || { cat "$WORK/hyperfine.log" >&2; die "hyperfine failed"; }
  local load1; load1=$(cut -d' ' -f1 /proc/loadavg)

  # Listeners each tool reports (one run each), and how many of them with an owner.
  local c_ps c_psg c_pn c_ss c_ns c_ls c_ls_udp o_ps o_ss o_ns o_pn
  in_ns "$PS" scan --json --all >"$WORK/ps.json"
  c_ps=$(jq length "$WORK/ps.json"); o_ps=$(jq '[.[] | select(.process != null)] | length' "$WORK/ps.json")
  c_psg=$(in_ns "$PS" scan --json | jq length)
  in_ns "$PS" scan --json --all --source proc-net >"$WORK/pn.json"
  c_pn=$(jq length "$WORK/pn.json"); o_pn=$(jq '[.[] | select(.process != null)] | length' "$WORK/pn.json")
  in_ns "$SS" -Hltunp >"$WORK/ss.txt"
  c_ss=$(wc -l <"$WORK/ss.txt"); o_ss=$(grep -c 'users:' "$WORK/ss.txt" || true)
  in_ns "$NETSTAT" -ltunp 2>/dev/null | grep -E '^(tcp|udp)' >"$WORK/netstat.txt" || true
  c_ns=$(wc -l <"$WORK/netstat.txt"); o_ns=$(awk '$NF != "-"' "$WORK/netstat.txt" | wc -l)
  { in_ns "$LSOF" -nP -iTCP -sTCP:LISTEN -iUDP 2>/dev/null || true; } | tail -n +2 >"$WORK/lsof.txt"
  c_ls=$(wc -l <"$WORK/lsof.txt") c_ls_udp=$(grep -c ' UDP ' "$WORK/lsof.txt" || true)

  local ss_mean ss_min
  ss_mean=$(jq -r '.results[] | select(.command == "ss -ltunp") | .mean' "$json")
  ss_min=$(jq -r '.results[] | select(.command == "ss -ltunp") | .min' "$json")
  echo
  echo "| command | mean ± σ (ms) | min (ms) | ratio to ss -ltunp (mean/mean) | min/min | listeners reported (with owner) |"
  echo "|---|---:|---:|---:|---:|---|"
  local name count
  for name in 'portsentinel scan --json' 'ss -ltunp' 'netstat -ltunp' \
    'lsof -nP -iTCP -sTCP:LISTEN -iUDP' 'portsentinel scan --json --source proc-net' \
    'portsentinel scan --json --netns host' 'portsentinel scan --json --all-holders' \
    ${OTHER:+'other: scan --json' 'other: scan --json --netns host'}; do
    case $name in
      'portsentinel scan --json') count="$c_ps sockets with --all ($o_ps), $c_psg rows grouped" ;;
      'ss -ltunp') count="$c_ss ($o_ss)" ;;
      'netstat -ltunp') count="$c_ns ($o_ns)" ;;
      lsof*) count="$c_ls, $c_ls_udp of them UDP (all with owner; one line per fd)" ;;
      *proc-net) count="$c_pn sockets with --all ($o_pn)" ;;
      *'netns host') count="this namespace only, as ss shows" ;;
      *all-holders) count="every fd table read to its end, as ss -p does" ;;
      other:*) count="$OTHER" ;;
    esac
    jq -r --arg n "$name" --arg c "$count" --argjson ss "$ss_mean" --argjson ssmin "$ss_min" '
      def r2: . * 100 | round / 100;
      .results[] | select(.command == $n) |
      "| `\($n)` | \(.mean * 1000 | r2) ± \(.stddev * 1000 | r2) | \(.min * 1000 | r2) | \(.mean / $ss | r2) | \(.min / $ssmin | r2) | \($c) |"' "$json"
  done
  echo
  local ratio; ratio=$(jq -r '.results as $r | ($r[] | select(.command == "portsentinel scan --json") | .mean) / ($r[] | select(.command == "ss -ltunp") | .mean) | . * 1000 | round / 1000' "$json")
  if jq -en --argjson r "$ratio" '$r <= 0.5' >/dev/null; then
    echo "Target scan --json ≤ 0.5 × ss -ltunp: MET (ratio $ratio)"
  else
    echo "Target scan --json ≤ 0.5 × ss -ltunp: MISSED (ratio $ratio)"
  fi
  [ "$c_ls_udp" -gt 0 ] || echo "Note: lsof lists no UDP socket here: with -sTCP:LISTEN, lsof (4.95) drops UDP sockets and exits 1 for the unmatched -iUDP."
  echo "Load average (1 min) before/after hyperfine: $load0 / $load1 on $(nproc) CPU(s)."
  if awk -v a="$load0" -v b="$load1" 'BEGIN { exit !(a > 0.7 || b > 1.7) }'; then
    echo "Warning: the machine was busy (other processes on the CPUs); the times are noisy. Re-run on an idle machine."
  fi
  echo "hyperfine JSON: $json"

  if [ "$STRACE" = 1 ]; then
    in_ns strace -c -f -o "$RESULTS/strace-$STAMP-$order-scan.txt" "$PS" scan --json >/dev/null
    in_ns strace -c -f -o "$RESULTS/strace-$STAMP-$order-ss.txt" "$SS" -ltunp >/dev/null
    echo "strace -c -f: $RESULTS/strace-$STAMP-$order-{scan,ss}.txt"
    local f
    for f in scan ss; do
      echo; echo "strace -c -f, $f (top 8 by calls):"
      awk 'NR > 2 && $1 !~ /^-/ && $NF != "total" { print }' "$RESULTS/strace-$STAMP-$order-$f.txt" |
        sort -k4,4nr | head -8
    done
  fi
  if [ "$PERF" = 1 ]; then
    if command -v perf >/dev/null 2>&1; then
      local data="$RESULTS/perf-$STAMP-$order.data"
      # cpu-clock: a software event, which works in VMs without hardware counters.
      in_ns perf record -q -e cpu-clock -F 10000 --call-graph dwarf,32768 -o "$data" \
        -- "$PS" scan --json >/dev/null 2>"$WORK/perf.log" || cat "$WORK/perf.log" >&2
      echo; echo "perf, one scan --json (children %, portsentinel frames and top syscalls; $data):"
      perf report -i "$data" --children --sort sym --stdio -g none 2>/dev/null |
        grep -E '\[\.\] portsentinel::|\[k\] __x64_sys_' | head -20
    else
      echo "compare.sh: --perf: perf is not installed (Debian: linux-perf); skipped" >&2
    fi
  fi
  teardown
}

# ---------------------------------------------------------------- machine
echo "# portsentinel scan --json vs ss / netstat / lsof"
echo
echo "- machine: $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
echo "- fd limit per process: $(ulimit -Hn) (hard)"
echo "- $($SS -V 2>&1 | head -1); $($NETSTAT --version 2>&1 | head -1); lsof $($LSOF -v 2>&1 | sed -n 's/^ *revision: *//p'); $(hyperfine --version)"
echo "- portsentinel $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' + uncommitted changes'), built --release"
echo "- table: $LISTENERS listeners (90% TCP, 10% UDP; $ADDR:$PORT_BASE-$((PORT_BASE + LISTENERS - 1))) in one process, $CONNECTIONS loopback TCP connections ($((2 * CONNECTIONS)) ESTABLISHED sockets) in $(((CONNECTIONS + PER_HOLDER - 1) / PER_HOLDER)) process(es)"
echo "- hyperfine -N --warmup $WARMUP --runs $RUNS, every command inside the namespace; processes on the host: $(compgen -G '/proc/[0-9]*' | wc -l)"

case $ORDER in
  both) scenario last; scenario first ;;
  *) scenario "$ORDER" ;;
esac
