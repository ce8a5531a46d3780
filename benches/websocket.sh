#!/usr/bin/env bash
# Fan-out to WebSocket members against the same number of plain TCP members,
# in one run against one riftd (issue 16), on loopback.
# riftd (web = true, history on, flood control off) is pinned to core 0 and
# riftbench to core 1 (taskset), as in compare.sh.
# Usage: benches/websocket.sh [RUNS]   (medians of RUNS runs each, default 3)
# Bounded: every run stops after its messages (riftbench: 60 s deadline).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
runs=${1:-3}
cargo build --release -q -p riftd --bin riftd -p riftd-bench --bin riftbench
work=$(mktemp -d)
cleanup() { kill "${riftd_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/riftd.toml" <<TOML
listen = "127.0.0.1:0"
web = true
history_file = "$work/history.jsonl"
flood_rate = 0
max_connections = 20000
max_connections_per_ip = 0
TOML
taskset -c 0 target/release/riftd --config "$work/riftd.toml" 2> "$work/riftd.log" &
riftd_pid=$!
port=$(listen_port "$work/riftd.log")

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
median_of() { local name=$1; shift; for json in "$@"; do field "$json" "$name"; done | median; }

receivers=100 publishers=4 messages=${MESSAGES:-50000}
declare -A rate=() p99=() lost=() gen=() srv=()
for transport in tcp websocket; do
    flag=()
    [ "$transport" = websocket ] && flag=(--websocket)
    results=()
    for _ in $(seq "$runs"); do
        results+=("$(taskset -c 1 target/release/riftbench fanout --port "$port" --pid "$riftd_pid" \
            --receivers "$receivers" --publishers "$publishers" --messages "$messages" \
            --size 64 --window 64 "${flag[@]}" --json)")
    done
    rate[$transport]=$(median_of deliveries_per_sec "${results[@]}")
    p99[$transport]=$(median_of p99_ms "${results[@]}")
    gen[$transport]=$(median_of generator_cpu_pct "${results[@]}")
    srv[$transport]=$(median_of server_cpu_pct "${results[@]}")
    lost[$transport]=0
    for json in "${results[@]}"; do lost[$transport]=$((lost[$transport] + $(field "$json" lost))); done
done
ratio=$(awk -v a="${rate[websocket]}" -v b="${rate[tcp]}" 'BEGIN{printf "%.2f", a/b}')
printf '%-22s %12s %12s %7s %9s %9s %12s %12s\n' workload tcp/s websocket/s ws/tcp \
    "p99 tcp" "p99 ws" "CPU g/s tcp" "CPU g/s ws"
printf '%-22s %12s %12s %7s %9s %9s %12s %12s\n' "fanout R=$receivers P=$publishers" \
    "${rate[tcp]}" "${rate[websocket]}" "${ratio}x" "${p99[tcp]}" "${p99[websocket]}" \
    "${gen[tcp]}%/${srv[tcp]}%" "${gen[websocket]}%/${srv[websocket]}%"
echo "  K=$messages S=64 W=64, medians of $runs; lost over all runs: tcp ${lost[tcp]}, websocket ${lost[websocket]}"
