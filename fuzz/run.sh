#!/usr/bin/env bash
# Runs portsentinel's cargo-fuzz targets, each for a fixed time, on the stable toolchain.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 30; no TARGET means every target in fuzz/fuzz_targets/.
# Prints one summary line per target (seconds, executions, exec/s, crash yes/no) and exits
# non-zero if any target crashed, hung, ran out of memory or failed to build.
#
# Environment:
#   FUZZ_KEEP_CORPUS=1     new inputs libFuzzer finds go into fuzz/corpus/TARGET/ (to be
#                          committed); otherwise into a temporary directory that is removed,
#                          so a CI run leaves the tree clean.
#   FUZZ_SANITIZER=NAME    none (default; works on stable rustc as is) or address (ASan;
#                          needs -Zsanitizer, so the script sets RUSTC_BOOTSTRAP=1 for it).
#   CARGO_BUILD_JOBS=N     cargo's own setting, to limit the build's parallelism.
#   FUZZ_LOG_DIR=DIR       keep each target's full libFuzzer output in DIR/TARGET.log
#                          (default: a temporary directory, printed on failure).
#   FUZZ_ARGS="..."        extra libFuzzer flags for every target (e.g. "-only_ascii=1").
#
# Crashing inputs are written to fuzz/artifacts/TARGET/ (git-ignored); reproduce one with
#   cargo fuzz run --sanitizer none TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
shift $(( $# > 0 ? 1 : 0 ))

sanitizer="${FUZZ_SANITIZER:-none}"
case "$sanitizer" in
    none) ;;
    # cargo-fuzz passes -Zsanitizer=...; stable rustc takes -Z flags only with RUSTC_BOOTSTRAP.
    address | leak | memory | thread) export RUSTC_BOOTSTRAP=1 ;;
    *) echo "FUZZ_SANITIZER must be none, address, leak, memory or thread" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    cargo install cargo-fuzz --locked
fi

all_targets=()
for f in "$here"/fuzz_targets/*.rs; do
    all_targets+=("$(basename "$f" .rs)")
done
if [ $# -gt 0 ]; then
    targets=("$@")
    for t in "${targets[@]}"; do
        if [ ! -f "$here/fuzz_targets/$t.rs" ]; then
            echo "unknown target '$t'; targets: ${all_targets[*]}" >&2
            exit 2
        fi
    done
else
    targets=("${all_targets[@]}")
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/portsentinel-fuzz.XXXXXX")"
cleanup() { rm -rf "$scratch"; }
trap cleanup EXIT
log_dir="${FUZZ_LOG_DIR:-$scratch/logs}"
mkdir -p "$log_dir"

fuzz_flags=(--fuzz-dir "$here" --sanitizer "$sanitizer")
if [ "$sanitizer" != none ]; then
    # Other RUSTFLAGS: keep those builds apart from the default one instead of rebuilding.
    fuzz_flags+=(--target-dir "$here/target/sanitizer-$sanitizer")
fi

# One cargo invocation builds every target (cheaper than one per target); `cargo fuzz run`
# below then finds them up to date.
echo "== building fuzz targets (sanitizer: $sanitizer)" >&2
build_start=$SECONDS
if [ "${#targets[@]}" -eq "${#all_targets[@]}" ]; then
    cargo fuzz build "${fuzz_flags[@]}"
else
    for t in "${targets[@]}"; do
        cargo fuzz build "${fuzz_flags[@]}" "$t"
    done
fi
echo "== build took $((SECONDS - build_start)) s" >&2

summary=()
failed=0
for t in "${targets[@]}"; do
    seeds="$here/corpus/$t"
    mkdir -p "$seeds"
    if [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ]; then
        corpora=("$seeds")
    else
        # libFuzzer writes new inputs to the first directory only.
        mkdir -p "$scratch/corpus/$t"
        corpora=("$scratch/corpus/$t" "$seeds")
    fi
    lib_args=(
        -max_total_time="$seconds"
        -timeout=10
        -rss_limit_mb=2048
        -print_final_stats=1
    )
    if [ -f "$here/dict/$t.dict" ]; then
        lib_args+=(-dict="$here/dict/$t.dict")
    fi
    if [ -n "${FUZZ_ARGS:-}" ]; then
        # shellcheck disable=SC2206 # word splitting wanted: a list of flags
        lib_args+=($FUZZ_ARGS)
    fi
    log="$log_dir/$t.log"
    echo "== $t: ${seconds} s, corpus ${corpora[*]}" >&2
    start=$SECONDS
    set +e
    cargo fuzz run "${fuzz_flags[@]}" "$t" "${corpora[@]}" -- "${lib_args[@]}" >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$((SECONDS - start))

    # Executions: the final stats, else "Done N runs in S second(s)", else the last "#N" line.
    runs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
    secs="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
    if [ -z "$runs" ]; then
        runs="$(sed -n 's/^Done \([0-9]*\) runs in.*/\1/p' "$log" | tail -n 1)"
    fi
    if [ -z "$runs" ]; then
        runs="$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]].*/\1/p' "$log" | tail -n 1)"
    fi
    runs="${runs:-0}"
    secs="${secs:-$elapsed}"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
    if [ -z "$rate" ]; then
        rate=$((runs / (secs > 0 ? secs : 1)))
    fi

    crash=no
    if [ "$rc" -ne 0 ]; then
        failed=1
        crash=yes
        kind="$(grep -o -m1 -E 'ERROR: libFuzzer: [a-z-]+|panicked at|error: could not compile|failed to build' "$log" || true)"
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
        case "$kind" in
            *deadly-signal | *panicked*) crash="yes (panic)" ;;
            *timeout) crash="yes (hang)" ;;
            *out-of-memory) crash="yes (oom)" ;;
            *compile* | *build*) crash="yes (build)" ;;
            "") crash="yes (exit $rc)" ;;
            *) crash="yes (${kind#ERROR: libFuzzer: })" ;;
        esac
        echo "!! $t failed (exit $rc${kind:+: $kind})${artifact:+; input saved to $artifact}" >&2
        grep -m1 -A8 -E "panicked at|ERROR: libFuzzer" "$log" >&2 || tail -n 30 "$log" >&2
        if [ -n "${FUZZ_LOG_DIR:-}" ]; then
            echo "!! full log: $log" >&2
        else
            keep_log="$here/artifacts/$t/last-failure.log"
            mkdir -p "$(dirname "$keep_log")"
            cp "$log" "$keep_log"
            echo "!! full log: $keep_log" >&2
        fi
    fi
    new=""
    if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ]; then
        new="$(find "$scratch/corpus/$t" -type f | wc -l)"
    fi
    summary+=("$(printf '%-14s %8s %12s %10s  %-5s%s' "$t" "$secs" "$runs" "$rate" "$crash" "${new:+   (new inputs, discarded: $new)}")")
done

echo
printf '%-14s %8s %12s %10s  %-5s\n' target seconds executions exec/s crash
for line in "${summary[@]}"; do
    echo "$line"
done
exit "$failed"
