#!/usr/bin/env bash
# Message delivery throughput with room history off, and on with each fsync
# policy. Loopback only, bounded (each run stops after its messages).
# Flood control is off: two publishers far exceed a person's 5 lines/s.
# Usage: benches/history_throughput.sh [RUNS]   (medians of RUNS runs, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
runs=${1:-3}
cargo build --release -q -p riftd --bin riftd -p riftd-bench --bin riftbench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for mode in off never everysec always; do
    rates=()
    for run in $(seq "$runs"); do
        rm -f "$work/history.jsonl" "$work/log"
        if [ "$mode" = off ]; then
            printf 'listen = "127.0.0.1:0"\nflood_rate = 0\nhistory_file = ""\n' > "$work/riftd.toml"
        else
            printf 'listen = "127.0.0.1:0"\nflood_rate = 0\nhistory_file = "%s"\nhistory_fsync = "%s"\n' \
                "$work/history.jsonl" "$mode" > "$work/riftd.toml"
        fi
        RUST_LOG=warn,riftd=info target/release/riftd --config "$work/riftd.toml" 2> "$work/log" &
        pid=$!
        port=$(listen_port "$work/log")
        line=$(target/release/riftbench fanout --port "$port" --receivers 50 --publishers 2 \
            --messages 50000 --size 64 --window 64 --json)
        kill -TERM "$pid"; wait "$pid" || true
        rates+=("$(printf '%s' "$line" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(int(d["deliveries_per_sec"]), d["lost"], d["p50_ms"], d["p99_ms"])')")
    done
    printf '%s\n' "${rates[@]}" | sort -n | awk -v mode="$mode" -v n="$runs" \
        '{ r[NR]=$1; lost+=$2; p50[NR]=$3; p99[NR]=$4 } END { m=int((n+1)/2); printf "history %-8s median %8d deliveries/s  (runs: %d, lost total %d, p50 %s ms, p99 %s ms)\n", mode, r[m], n, lost, p50[m], p99[m] }'
done
