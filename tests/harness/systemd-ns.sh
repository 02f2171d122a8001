#!/bin/bash
# systemd-ns.sh - boot a throw-away systemd (PID 1) in private pid/mount/net/uts/ipc/cgroup
# namespaces on a host that is NOT itself run by systemd (tested: Debian 12, systemd 252).
#
#   systemd-ns.sh start [SHARE_DIR]   boot; prints the HOST pid of the namespace's systemd on stdout
#                               (SHARE_DIR, default: dir of this script, is bind-mounted
#                               read-write at /run/psns/share inside)
#   systemd-ns.sh run  PID CMD...     run CMD inside all namespaces of PID (cwd /), foreground only
#   systemd-ns.sh spawn PID OUT CMD.. start CMD detached inside (stdout/stderr appended to host file
#                               OUT); prints its pid as seen INSIDE the namespace
#   systemd-ns.sh stop PID            systemctl exit, wait, remove cgroup + state
#   systemd-ns.sh status PID          systemctl is-system-running inside
#   systemd-ns.sh install PID FILE... copy unit files (host paths) into the namespace's
#                               /etc/systemd/system and daemon-reload
#
# Isolation (nothing written by the booted systemd reaches the host):
#   /run /tmp /var/tmp /var/log/journal /etc/systemd/system /dev  fresh tmpfs
#   /etc /var /usr /usr/local   overlayfs, upper layer on tmpfs (host files read-only lower);
#                               no /usr/sbin/policy-rc.d (package scripts start services)
#   /sys                        fresh read-only sysfs (of the new netns) + cgroup2 of the cgroupns
#   /proc/sys                   read-only (except /proc/sys/net, which is per-netns)
#   cgroup                      the namespace lives in  <unified>/psns-harness-<pid>,
#                               a cgroup namespace makes that the root; removed at stop
#   PSNS_HIDE="/var/lib/x /etc/x ..."  (env) paths under /etc or /var deleted from the overlay view
#                               (whiteouts; the host copy is untouched). Needed e.g. when the host
#                               has a plain /var/lib/NAME and the unit uses DynamicUser=yes +
#                               StateDirectory=NAME: systemd tries rename(/var/lib/NAME,
#                               /var/lib/private/NAME), which overlayfs refuses with EXDEV.
#   every unit pulled in by sysinit/basic/sockets/timers/paths/local-fs .wants is masked,
#   except journald (socket, dev-log socket, service).
set -euo pipefail

SELF=$(readlink -f "$0")
STATE_DIR=${PSNS_STATE_DIR:-${TMPDIR:-/tmp}/portsentinel-systemd-ns}
TARGET=psns-harness.target
BOOT_TIMEOUT=${PSNS_BOOT_TIMEOUT:-30}

die() { echo "systemd-ns.sh: $*" >&2; exit 1; }

ns_run() {  # ns_run PID CMD...   (nsenter does not keep cwd: use absolute paths)
    local pid=$1; shift
    nsenter -t "$pid" -m -p -n -u -i -C --wd=/ -- "$@"
}

unified_root() {
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then echo /sys/fs/cgroup
    elif [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then echo /sys/fs/cgroup/unified
    else die "no cgroup2 hierarchy found"; fi
}

# ---------------------------------------------------------------- inside (PID 1)
inner() {
    local share=$1
    set -e
    # /proc is already the new pid namespace's proc (unshare --mount-proc)
    # drop host mounts below /run from OUR (private) namespace copy, then a fresh /run
    findmnt -rn -o TARGET | grep '^/run/' | sort -r | while read -r m; do umount -l "$m" || true; done
    mount -t tmpfs -o mode=755,nosuid,nodev,size=256m tmpfs /run
    mkdir -p /run/systemd /run/lock /run/psns/share /run/psns/ovl/etc/{u,w} /run/psns/ovl/var/{u,w} /run/psns/ovl/usr/{u,w} /run/psns/ovl/local/{u,w}
    # host dir shared with the tests; bound BEFORE /tmp is covered, so it may live in /tmp
    [ -n "$share" ] && mount --bind "$share" /run/psns/share
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
    mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/psns/ovl/etc/u,workdir=/run/psns/ovl/etc/w /etc
    mount -t overlay overlay -o lowerdir=/var,upperdir=/run/psns/ovl/var/u,workdir=/run/psns/ovl/var/w /var
    # /usr too, so a package installed with dpkg stays in here; and /usr/local, so software
    # installed "the way the README says" does
    mount -t overlay overlay -o lowerdir=/usr,upperdir=/run/psns/ovl/usr/u,workdir=/run/psns/ovl/usr/w /usr
    mount -t overlay overlay -o lowerdir=/usr/local,upperdir=/run/psns/ovl/local/u,workdir=/run/psns/ovl/local/w /usr/local
    # a fresh Debian system has no policy-rc.d: maintainer scripts start services as they
    # would there (the host's copy, which forbids it, is untouched)
    rm -f /usr/sbin/policy-rc.d
    # whiteout host state that must not leak into the test (only in the overlay; host untouched)
    local h
    for h in ${PSNS_HIDE:-}; do
        case "$h" in /etc/?*|/var/?*) rm -rf -- "$h";; *) echo "PSNS_HIDE: ignoring $h (only /etc/* and /var/*)" >&2;; esac
    done
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
    mkdir -p /var/log/journal
    mount -t tmpfs -o mode=2755,nosuid,nodev tmpfs /var/log/journal
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /etc/systemd/system
    : > /etc/fstab                      # no fstab-generated mounts/swaps

    # private /dev (devtmpfs is shared with the host: /dev/log symlink etc. must not leak)
    mount -t tmpfs -o mode=755,nosuid,size=4m tmpfs /dev
    mknod -m 666 /dev/null c 1 3;    mknod -m 666 /dev/zero c 1 5
    mknod -m 666 /dev/full c 1 7;    mknod -m 666 /dev/random c 1 8
    mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/tty c 5 0
    mkdir -p /dev/pts /dev/shm /dev/mqueue
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620,nosuid,noexec devpts /dev/pts
    ln -s pts/ptmx /dev/ptmx
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
    mount -t mqueue -o nosuid,nodev,noexec mqueue /dev/mqueue
    ln -s /proc/self/fd /dev/fd
    ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr

    # /sys: read-only, of our netns; cgroup2 of our cgroup namespace (root = host's psns-harness-N)
    mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
    # global sysctls read-only; per-netns net.* stays writable
    mount --bind /proc/sys /proc/sys
    mount --bind /proc/sys/net /proc/sys/net
    mount -o remount,bind,ro,nosuid,nodev,noexec /proc/sys
    if [ -e /proc/sysrq-trigger ]; then
        mount --bind /proc/sysrq-trigger /proc/sysrq-trigger
        mount -o remount,bind,ro /proc/sysrq-trigger
    fi

    # clean unit set: mask everything the early-boot targets would pull in, except journald
    local keep=" systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket "
    local d u
    for d in sysinit basic sockets timers paths local-fs; do
        for u in /lib/systemd/system/$d.target.wants/*; do
            [ -e "$u" ] || [ -L "$u" ] || continue
            u=${u##*/}
            case "$keep" in *" $u "*) continue;; esac
            ln -sf /dev/null "/etc/systemd/system/$u"
        done
    done
    ln -sf /dev/null /etc/systemd/system/tmp.mount   # basic.target Wants= it; /tmp is ours already
    # remounts/fsck act on the (host-global) superblock: never run them in here
    ln -sf /dev/null /etc/systemd/system/systemd-remount-fs.service
    ln -sf /dev/null /etc/systemd/system/systemd-fsck-root.service
    cat > /etc/systemd/system/$TARGET <<'EOF'
[Unit]
Description=portsentinel test harness target (journald only)
Requires=systemd-journald.socket
Wants=systemd-journald.service systemd-journald-dev-log.socket
After=systemd-journald.socket systemd-journald.service systemd-journald-dev-log.socket
AllowIsolate=yes
EOF
    ip link set lo up 2>/dev/null || true   # (systemd does this too)
    exec env -i container=psns-harness PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 /lib/systemd/systemd --system --unit=$TARGET --show-status=no
}

# ---------------------------------------------------------------- outside
start() {
    local share=${1:-$(dirname "$SELF")}
    [ "$(id -u)" = 0 ] || die "must run as root"
    [ -d "$share" ] || die "share dir $share missing"
    share=$(readlink -f "$share")
    mkdir -p "$STATE_DIR"
    local uroot cg tag
    uroot=$(unified_root)
    tag=psns-harness-$$-$RANDOM
    cg=$uroot/$tag
    mkdir "$cg"
    local log=$STATE_DIR/$tag.log
    # setsid: detach from the caller's session; the sh moves itself into the harness cgroup
    # and execs unshare, which forks PID 1 of the new pid namespace (--kill-child: if unshare
    # dies, the namespace dies with it).
    setsid sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$cg" \
        unshare --pid --fork --kill-child --mount --mount-proc --propagation private \
                --net --uts --ipc --cgroup \
                "$SELF" __inner "$share" </dev/null >"$log" 2>&1 &
    local upid=$! pid="" i
    for i in $(seq 1 100); do
        pid=$(cat /proc/$upid/task/$upid/children 2>/dev/null | awk '{print $1}') || true
        [ -n "$pid" ] && break
        sleep 0.05
    done
    [ -n "$pid" ] || { cat "$log" >&2; rmdir "$cg" 2>/dev/null; die "namespace did not start"; }
    printf '%s\n' "$cg" > "$STATE_DIR/$pid.cgroup"
    printf '%s\n' "$log" > "$STATE_DIR/$pid.log"
    printf '%s\n' "$upid" > "$STATE_DIR/$pid.unshare"
    # wait until the manager finished booting
    local deadline=$((SECONDS + BOOT_TIMEOUT)) st=""
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; cleanup_state "$pid"; die "systemd died during boot"; }
        if [ "$(readlink /proc/$pid/exe 2>/dev/null)" = /usr/lib/systemd/systemd ] ||
           [ "$(readlink /proc/$pid/exe 2>/dev/null)" = /lib/systemd/systemd ]; then
            st=$(ns_run "$pid" systemctl is-system-running 2>/dev/null) || true
            case "$st" in running|degraded) echo "$pid"; return 0;; esac
        fi
        sleep 0.05
    done
    echo "systemd-ns.sh: timeout, state '$st'; log: $log" >&2
    echo "$pid"; return 1
}

cleanup_state() {
    local pid=$1 cg
    cg=$(cat "$STATE_DIR/$pid.cgroup" 2>/dev/null) || return 0
    # remove the (now empty) cgroup subtree the namespace's systemd created, deepest first
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
    [ -d "$cg" ] && echo "systemd-ns.sh: warning: could not remove $cg" >&2
    rm -f "$(cat "$STATE_DIR/$pid.log" 2>/dev/null || echo /nonexistent)"
    rm -f "$STATE_DIR/$pid.cgroup" "$STATE_DIR/$pid.log" "$STATE_DIR/$pid.unshare"
}

# nsenter (util-linux) mirrors job-control stops of its child: systemd-shutdown's
# kill(-1, SIGSTOP)/SIGCONT dance leaves every nsenter attached to the namespace STOPPED,
# it never reaps its (inner) child, and the pid namespace's init then hangs forever in
# zap_pid_ns_processes(). So: keep SIGCONTing host-side processes attached to the namespace.
unfreeze_attached() {   # builtins only: this runs in a polling loop
    local init=$1 p
    for p in /proc/[0-9]*; do
        [[ $p/ns/pid_for_children -ef /proc/$init/ns/pid ]] || continue
        [[ $p/ns/pid -ef /proc/$init/ns/pid ]] && continue
        kill -CONT "${p#/proc/}" 2>/dev/null || true
    done
}

# processes inside the namespace whose parent is outside it (started by `systemd-ns.sh run`/nsenter).
# systemd-shutdown is not their parent, gets no SIGCHLD when they die, and then sleeps
# ~10 s in wait_for_children() before re-checking: terminate them before `systemctl exit`.
kill_attached() {
    local init=$1 sig=$2 p stat ppid
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$init" ] && continue
        [[ $p/ns/pid -ef /proc/$init/ns/pid ]] || continue
        read -r stat < "$p/stat" 2>/dev/null || continue
        stat=${stat##*) }; ppid=${stat#* }; ppid=${ppid%% *}
        [[ /proc/$ppid/ns/pid -ef /proc/$init/ns/pid ]] && continue
        kill -"$sig" "${p#/proc/}" 2>/dev/null || true
    done
}

stop() {
    local pid=$1 i
    [ -f "$STATE_DIR/$pid.cgroup" ] || die "no harness with pid $pid"
    if kill -0 "$pid" 2>/dev/null; then
        kill_attached "$pid" TERM
        for i in 1 2 3 4; do unfreeze_attached "$pid"; sleep 0.02; done
        kill_attached "$pid" KILL
        local waitn=200     # 10 s
        timeout 5 nsenter -t "$pid" -m -p -n -u -i -C --wd=/ -- systemctl exit 0 >/dev/null 2>&1 || waitn=20
        for i in $(seq 1 $waitn); do
            kill -0 "$pid" 2>/dev/null || break
            unfreeze_attached "$pid"
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "systemd-ns.sh: systemd did not exit after systemctl exit, SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true      # kills the whole pid namespace
            for i in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                unfreeze_attached "$pid"
                sleep 0.05
            done
        fi
        kill -0 "$pid" 2>/dev/null && die "pid $pid still alive"
    fi
    # wait for the unshare parent too (it may linger as a zombie until the host's init reaps it)
    local upid; upid=$(cat "$STATE_DIR/$pid.unshare" 2>/dev/null) || upid=""
    if [ -n "$upid" ]; then
        for i in $(seq 1 100); do
            [ -e /proc/$upid ] || break
            [ "$(awk '{print $3}' /proc/$upid/stat 2>/dev/null)" = Z ] && break
            sleep 0.05
        done
    fi
    # cgroup removal can race with the kernel reaping the last tasks
    local cg; cg=$(cat "$STATE_DIR/$pid.cgroup")
    for i in $(seq 1 40); do
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ -d "$cg" ] || break
        sleep 0.05
    done
    cleanup_state "$pid"
}

# spawn PID OUTFILE CMD...: start CMD detached inside the namespace; it is re-parented to the
# namespace's systemd (so no nsenter stays attached). Prints CMD's pid AS SEEN INSIDE.
spawn() {
    local pid=$1 out=$2; shift 2
    ns_run "$pid" sh -c '"$@" </dev/null >&3 2>&3 3>&- & echo $!' sh "$@" 3>>"$out"
}

case "${1:-}" in
    __inner) shift; inner "${1:-}";;
    start)   shift; start "$@";;
    stop)    shift; [ $# -eq 1 ] || die "usage: systemd-ns.sh stop PID"; stop "$1";;
    spawn)   shift; [ $# -ge 3 ] || die "usage: systemd-ns.sh spawn PID OUTFILE CMD..."; spawn "$@";;
    run)     shift; [ $# -ge 2 ] || die "usage: systemd-ns.sh run PID CMD..."; p=$1; shift; ns_run "$p" "$@";;
    status)  shift; ns_run "$1" systemctl is-system-running;;
    install) shift; [ $# -ge 2 ] || die "usage: systemd-ns.sh install PID UNITFILE..."; p=$1; shift
             for f in "$@"; do ns_run "$p" tee "/etc/systemd/system/${f##*/}" < "$f" >/dev/null; done
             ns_run "$p" systemctl daemon-reload;;
    *) sed -n '2,/^set -euo/p' "$SELF" | sed '$d' >&2; exit 2;;
esac
