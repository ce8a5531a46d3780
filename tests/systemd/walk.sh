#!/usr/bin/env bash
# The install-and-operate walk of README.md, "Install as a systemd service",
# in a real systemd: boots a Debian 12 container (systemd 252 as PID 1) with
# systemd-nspawn, twice, and runs tests/systemd/inside.sh in it:
#   boot 1: the README's steps exactly, Type=notify start, chat (JSON and
#           text), reload (and its log line), kill -9 and restart with
#           history, stop with 205, a refused config not restarted,
#           accounts as the README says, `systemd-analyze security`;
#   boot 2: the enabled unit came up at boot with its history; socket
#           activation as the README says, plain and TLS.
#
#   tests/systemd/walk.sh PATH/TO/riftd        (as root; tests/systemd.rs runs it)
#
# The container has its own network namespace with only a loopback
# interface; nothing leaves the machine (except build-root.sh's debootstrap
# from the Debian mirror, once, when the cached root is missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
riftd=${1:?usage: walk.sh PATH/TO/riftd}
root=${RIFTD_CI_ROOT:-/var/cache/riftd-ci/bookworm-root}

fail() { echo "walk.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (systemd-nspawn boots a container): run cargo test as root"
command -v systemd-nspawn >/dev/null || fail "systemd-nspawn is missing: apt-get install -y systemd-container"
command -v nsenter >/dev/null || fail "nsenter is missing: apt-get install -y util-linux"
"$here/build-root.sh" "$root" || fail "cannot build the container root: tests/systemd/build-root.sh $root"

work=$(mktemp -d /var/tmp/riftd-walk.XXXXXX)
machine="riftd-walk-$$"
nspawn_pid=
leader=

cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' TERM INT

# A private copy of the cached root, so the cache stays pristine and the
# two boots share one disk.
exec 9>"$root.lock"
flock -s 9
cp -a --reflink=auto "$root" "$work/root"
exec 9>&-
mkdir -p "$work/root/root/src"
cp -a "$repo/contrib" "$repo/README.md" "$work/root/root/src/"
install -m 0755 "$riftd" "$work/root/root/riftd-built"
install -m 0755 "$here/inside.sh" "$work/root/root/inside.sh"

# Runs a command inside the booted container, in all its namespaces.
in_ct() {
    nsenter -t "$leader" -a -- /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 SYSTEMD_PAGER=cat PAGER=cat "$@"
}

boot() {
    local n=$1
    echo "walk.sh: boot $n of $machine"
    systemd-nspawn -D "$work/root" -M "$machine" --register=no --keep-unit \
        --private-network --console=passive -b >"$work/boot$n.log" 2>&1 &
    nspawn_pid=$!
    leader=
    for _ in $(seq 300); do
        leader=$(pgrep -P "$nspawn_pid" -x systemd || true)
        [ -n "$leader" ] && break
        kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/boot$n.log" >&2; fail "systemd-nspawn exited"; }
        sleep 0.1
    done
    [ -n "$leader" ] || { cat "$work/boot$n.log" >&2; fail "no systemd in the container after 30 s"; }
    # systemctl needs the manager's private socket, made early in boot.
    for _ in $(seq 300); do
        in_ct test -S /run/systemd/private && break
        sleep 0.1
    done
    local state
    state=$(in_ct timeout 120 systemctl is-system-running --wait || true)
    case $state in
        running) ;;
        degraded)
            # A unit unrelated to riftd failed (the steps check riftd's own).
            echo "walk.sh: boot $n: the container is degraded:" >&2
            in_ct systemctl --failed --no-pager >&2 || true
            ;;
        *)
            in_ct systemctl --failed --no-pager >&2 || true
            fail "the container's systemd is '$state' after booting, not 'running'"
            ;;
    esac
    echo "walk.sh: boot $n: systemd $(in_ct systemctl --version | head -n1 | cut -d' ' -f2) is running"
}

poweroff() {
    in_ct systemctl poweroff || true
    for _ in $(seq 600); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$nspawn_pid" 2>/dev/null; then
        cat "$work/boot$1.log" >&2
        fail "the container did not power off within 60 s"
    fi
    wait "$nspawn_pid" || true
    nspawn_pid=
}

boot 1
in_ct /root/inside.sh first-boot || { poweroff 1 || true; fail "first boot: a step failed (above)"; }
poweroff 1
boot 2
in_ct /root/inside.sh second-boot || { poweroff 2 || true; fail "second boot: a step failed (above)"; }
poweroff 2
echo "walk.sh: every step passed"
