#!/usr/bin/env bash
# Runs the whole test suite: installs the Debian packages the tests need when they are
# missing, builds everything, and runs every test. Run it as root from the repository:
#
#   sudo tests/run-all.sh
#
# Tests open real sockets in their own network namespaces, start a real journald and a
# real systemd in private namespaces, and a real D-Bus session with a notification server.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "tests/run-all.sh: the tests need root (network namespaces, ports below 1024, systemd); run it with sudo" >&2
  exit 1
fi

# command -> Debian package that provides it
need=(
  "ip:iproute2"
  "setpriv:util-linux"
  "nsenter:util-linux"
  "sysctl:procps"
  "systemd-analyze:systemd"
  "journalctl:systemd"
  "busctl:systemd"
  "Xvfb:xvfb"
  "dbus-daemon:dbus-daemon"
  "dbus-send:dbus-bin"
  "dunst:dunst"
  "dunstctl:dunst"
  "strace:strace"
  "g++:g++"
  # Real daemons the built-in allowances are tested against (tests/policy.rs).
  "chronyd:chrony"
  "rpc.statd:nfs-common"
  "rpcbind:rpcbind"
  "ypbind:nis"
  # The real DHCP client whose packet socket the built-in rule allows (tests/portless.rs).
  "dhclient:isc-dhcp-client"
  # A real capture tool, allowed when root starts it (tests/portless.rs).
  "tcpdump:tcpdump"
  # A FUSE filesystem whose server a test stops, as any user could (tests/instant.rs).
  "bindfs:bindfs"
  # The compiler of record for the eBPF program: tests/bpf_object.rs rebuilds
  # bpf/instant.bpf.o from its source and checks it is the committed one.
  "clang-14:clang-14"
  "llvm-strip-14:llvm-14"
  # The fleet engines the metrics and alerts are tested against (tests/fleet.rs), and
  # journald's forwarding to a central journal (tests/e2e_systemd.rs).
  "prometheus:prometheus"
  "prometheus-node-exporter:prometheus-node-exporter"
  "prometheus-alertmanager:prometheus-alertmanager"
  "/lib/systemd/systemd-journal-remote:systemd-journal-remote"
  # The Debian package's checks (tests/package.rs): lintian, man pages that render, and
  # the shared-library dependencies cargo deb works out.
  "lintian:lintian"
  "man:man-db"
  "dpkg-shlibdeps:dpkg-dev"
)
missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
# Packages named only when missing: naming an installed one would upgrade it.
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run-all.sh: installing ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u)
fi

cargo build --all-targets --locked
cargo test --all-targets --locked
# The load test and the two-minute soak measure a release build, as it is deployed; one
# test at a time, so that none measures another's load.
cargo build --release --locked --bins --examples
cargo test --release --locked --test load --test soak -- --nocapture --test-threads=1
# The Debian package, from that release build: built, checked by lintian, installed, used
# and purged under a real systemd (tests/package.rs). cargo-deb is a build tool from
# crates.io, installed here only.
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
cargo deb --no-build --locked
cargo test --release --locked --test package -- --ignored --nocapture
# A short run of every fuzz target (the long runs and their figures: README, "Reliability").
fuzz/run.sh "${FUZZ_SECONDS:-5}"
