#!/usr/bin/env bash
# Builds (or reuses) the minimal Debian 12 root that tests/systemd.rs boots
# with systemd-nspawn. Slow (a debootstrap, a few minutes), so it lives
# outside the clone and is rebuilt only when missing or when PACKAGES or this
# script's STAMP_VERSION change. .ci/run calls it before `cargo test`; the
# test calls it too when the root is missing.
#
#   tests/systemd/build-root.sh [ROOT]     default /var/cache/riftd-ci/bookworm-root
#
# Needs root, debootstrap and network access to the Debian mirror apt is
# configured with (the only traffic that leaves this machine).
set -euo pipefail

ROOT=${1:-${RIFTD_CI_ROOT:-/var/cache/riftd-ci/bookworm-root}}
SUITE=bookworm
# systemd as PID 1 (systemd-sysv gives /sbin/init); dbus for systemctl's
# bus; openssl to make a test certificate inside the container.
PACKAGES=systemd,systemd-sysv,dbus,openssl
STAMP_VERSION=1
stamp="suite=$SUITE packages=$PACKAGES version=$STAMP_VERSION"

mkdir -p "$(dirname "$ROOT")"
# One build at a time (parallel test runs share the cache); walk.sh takes
# the same lock, shared, while it copies the root.
exec 9>"$ROOT.lock"
flock 9

if [ -f "$ROOT.stamp" ] && [ "$(cat "$ROOT.stamp")" = "$stamp" ] && [ -x "$ROOT/sbin/init" ]; then
    exit 0
fi

# The mirror apt already uses (deb822 sources or a classic sources.list).
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ { print $2; exit }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

command -v debootstrap >/dev/null || { echo "build-root.sh: debootstrap is missing: apt-get install -y debootstrap" >&2; exit 1; }

rm -rf "$ROOT.new" "$ROOT.stamp"
echo "build-root.sh: debootstrap $SUITE from $mirror into $ROOT (a few minutes)" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT.new" "$mirror" >"$ROOT.log" 2>&1 \
    || { tail -n 20 "$ROOT.log" >&2; exit 1; }
# No apt caches in the image; a machine id is made at each boot.
rm -rf "$ROOT.new"/var/cache/apt/archives/*.deb "$ROOT.new"/var/lib/apt/lists/*
: >"$ROOT.new/etc/machine-id"
echo riftd-ci >"$ROOT.new/etc/hostname"
rm -rf "$ROOT"
mv "$ROOT.new" "$ROOT"
echo "$stamp" >"$ROOT.stamp"
echo "build-root.sh: done" >&2
