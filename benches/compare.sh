#!/usr/bin/env bash
# riftd vs Redis pub/sub, side by side in one run, on loopback.
# Servers are pinned to core 0 and the load generator to core 1 (taskset).
# Usage: benches/compare.sh [RUNS]   (medians of RUNS runs each, default 3)
# Installs redis-server from Debian if it is missing. Bounded: every run
# stops after its messages (riftbench also has a 60 s deadline per run).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
if ! command -v redis-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi
cargo build --release -q --bin riftd --bin riftbench
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
RUST_LOG=warn,riftd=info taskset -c 0 target/release/riftd --config "$work/riftd.toml" 2> "$work/riftd.log" &
riftd_pid=$!
riftd_port=""
for _ in $(seq 100); do
    riftd_port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$work/riftd.log" | head -1 | cut -d: -f2 || true)
    [ -n "$riftd_port" ] && break
    sleep 0.05
done
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

bench() { # proto port args... -> JSON line plus "cpu=PERCENT" of the generator
    local proto=$1 port=$2; shift 2
    local start end line
    start=$(awk '{print $14+$15+$16+$17}' /proc/self/stat)
    TIMEFORMAT='%U %S %R'
    { time taskset -c 1 target/release/riftbench "$@" --proto "$proto" --port "$port" --json > "$work/out"; } 2> "$work/time"
    read -r user sys real < "$work/time"
    printf '%s %s\n' "$(cat "$work/out")" "$(awk -v u="$user" -v s="$sys" -v r="$real" 'BEGIN{printf "%.0f", 100*(u+s)/r}')"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

printf '%-26s %14s %14s %8s %10s %10s %6s\n' workload riftd/s redis/s ratio "p99 riftd" "p99 redis" "gen%"
for shape in "100 4 20000" "1000 2 2000"; do
    read -r receivers publishers messages <<< "$shape"
    declare -A rate=() p99=() lost=() cpu=()
    for proto in riftd redis; do
        port=$riftd_port; [ "$proto" = redis ] && port=$redis_port
        rates=(); p99s=(); losts=0; cpus=()
        for _ in $(seq "$runs"); do
            out=$(bench "$proto" "$port" fanout --receivers "$receivers" --publishers "$publishers" \
                --messages "$messages" --size 64 --window 64)
            json=${out% *}; cpus+=("${out##* }")
            rates+=("$(field "$json" deliveries_per_sec)"); p99s+=("$(field "$json" p99_ms)")
            losts=$((losts + $(field "$json" lost)))
        done
        rate[$proto]=$(printf '%s\n' "${rates[@]}" | median)
        p99[$proto]=$(printf '%s\n' "${p99s[@]}" | median)
        cpu[$proto]=$(printf '%s\n' "${cpus[@]}" | median)
        lost[$proto]=$losts
    done
    ratio=$(awk -v a="${rate[riftd]}" -v b="${rate[redis]}" 'BEGIN{printf "%.2f", a/b}')
    printf '%-26s %14s %14s %8s %10s %10s %6s\n' "fanout R=$receivers P=$publishers" \
        "${rate[riftd]}" "${rate[redis]}" "${ratio}x" "${p99[riftd]}" "${p99[redis]}" "${cpu[riftd]}/${cpu[redis]}"
    echo "  lost: riftd ${lost[riftd]}, redis ${lost[redis]}"
done
# Every riftd login is announced (201) to the whole lobby, so logging in N
# idle users costs O(N^2) frames; 2000 keeps that to seconds.
idle=${IDLE:-2000}
for proto in riftd redis; do
    port=$riftd_port; pid=$riftd_pid
    [ "$proto" = redis ] && port=$redis_port && pid=$redis_pid
    out=$(bench "$proto" "$port" idle --connections "$idle" --pid "$pid")
    echo "idle $idle $proto: $(field "${out% *}" bytes_per_connection) B of RSS per connection"
done
out=$(bench riftd "$riftd_port" connect --connections 20000 --threads 4)
echo "connect + login riftd: $(field "${out% *}" logins_per_sec)/s"
