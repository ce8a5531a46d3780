#!/usr/bin/env bash
# riftd vs Redis pub/sub, side by side in one run, on loopback.
# Servers are pinned to core 0 and the load generator to core 1 (taskset).
# Usage: benches/compare.sh [RUNS]   (medians of RUNS runs each, default 3)
# Installs redis-server from Debian if it is missing. Bounded: every run
# stops after its messages (riftbench also has a 60 s deadline per run).
# riftd runs with its defaults (history on, everysec; log level info) except
# flood control and the per-address cap, which a one-address benchmark trips.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
runs=${1:-3}
if ! command -v redis-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi
cargo build --release -q -p riftd --bin riftd -p riftd-bench --bin riftbench
work=$(mktemp -d)
redis_port=6399
cleanup() { kill "${riftd_pid:-}" "${redis_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --maxclients 20000 --daemonize no --loglevel warning > "$work/redis.log" 2>&1 &
redis_pid=$!
cat > "$work/riftd.toml" <<TOML
listen = "127.0.0.1:0"
# History at its default (everysec), in the work directory.
history_file = "$work/history.jsonl"
flood_rate = 0
max_connections = 20000
max_connections_per_ip = 0
TOML
taskset -c 0 target/release/riftd --config "$work/riftd.toml" 2> "$work/riftd.log" &
riftd_pid=$!
riftd_port=$(listen_port "$work/riftd.log")
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

bench() { # proto args... -> one JSON line
    local proto=$1; shift
    local port=$riftd_port pid=$riftd_pid
    [ "$proto" = redis ] && port=$redis_port && pid=$redis_pid
    taskset -c 1 target/release/riftbench "$@" --proto "$proto" --port "$port" --pid "$pid" --json
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
# median_of FIELD JSON... -> the median of that field over the runs
median_of() { local name=$1; shift; for json in "$@"; do field "$json" "$name"; done | median; }

printf '%-20s %12s %12s %7s %10s %10s %14s %14s\n' workload riftd/s redis/s ratio "p99 riftd" "p99 redis" "CPU gen/srv r" "CPU gen/srv R"
for shape in "100 4 50000" "1000 2 10000"; do
    read -r receivers publishers messages <<< "$shape"
    declare -A rate=() p99=() lost=() gen=() srv=()
    for proto in riftd redis; do
        results=()
        for _ in $(seq "$runs"); do
            results+=("$(bench "$proto" fanout --receivers "$receivers" --publishers "$publishers" \
                --messages "$messages" --size 64 --window 64)")
        done
        rate[$proto]=$(median_of deliveries_per_sec "${results[@]}")
        p99[$proto]=$(median_of p99_ms "${results[@]}")
        gen[$proto]=$(median_of generator_cpu_pct "${results[@]}")
        srv[$proto]=$(median_of server_cpu_pct "${results[@]}")
        lost[$proto]=0
        for json in "${results[@]}"; do lost[$proto]=$((lost[$proto] + $(field "$json" lost))); done
    done
    ratio=$(awk -v a="${rate[riftd]}" -v b="${rate[redis]}" 'BEGIN{printf "%.2f", a/b}')
    printf '%-20s %12s %12s %7s %10s %10s %14s %14s\n' "fanout R=$receivers P=$publishers" \
        "${rate[riftd]}" "${rate[redis]}" "${ratio}x" "${p99[riftd]}" "${p99[redis]}" \
        "${gen[riftd]}%/${srv[riftd]}%" "${gen[redis]}%/${srv[redis]}%"
    echo "  lost over all runs: riftd ${lost[riftd]}, redis ${lost[redis]}"
done
# Idle memory: the server's RSS growth per logged-in connection, once it
# has been quiet for 2 s (riftd gives freed heap back after 1 s of quiet).
idle=${IDLE:-10000}
for proto in riftd redis; do
    json=$(bench "$proto" idle --connections "$idle")
    echo "idle $idle $proto: $(field "$json" bytes_per_connection) B of RSS per connection"
done
results=()
for _ in $(seq "$runs"); do
    results+=("$(bench riftd connect --connections 30000 --window 16)")
done
echo "connect + login riftd (16 in progress): $(median_of logins_per_sec "${results[@]}")/s," \
    "CPU generator $(median_of generator_cpu_pct "${results[@]}")% server $(median_of server_cpu_pct "${results[@]}")%"
