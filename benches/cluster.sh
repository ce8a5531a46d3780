#!/usr/bin/env bash
# Cluster mode (issue 14) beside single-node riftd, in one run, on loopback:
# one nats-server (JetStream, file storage in a temp dir) and two riftd
# nodes on their own ports, two more nodes sharing one port with
# reuse_port = true (issue 15, "More cores on one machine": the kernel
# spreads riftbench's connections over them), against one riftd node with
# the same config (history on).
# Cores: the servers (nats-server and every node, or the single riftd) are
# pinned to core 0 and the generator to core 1 (taskset), as compare.sh
# pins riftd and Redis; on a 2-core machine that is everything, so the
# reuse_port pair shares one core: it shows the mechanism, not the scaling.
# Usage: benches/cluster.sh [RUNS]   (medians of RUNS runs each, default 3)
# Needs nats-server >= 2.11: $RIFTD_NATS_SERVER, else what
# tests/cluster/nats-server.sh prints (it installs it the first time).
# Bounded: every run stops after its messages (riftbench also has a 60 s
# deadline); every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
runs=${1:-3}
nats_server=${RIFTD_NATS_SERVER:-$(tests/cluster/nats-server.sh)}
cargo build --release -q -p riftd --bin riftd -p riftd-bench --bin riftbench
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

nats_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 0 "$nats_server" -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" > "$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break
    sleep 0.05
done

# start_node NAME [CLUSTER-LINES [LISTEN]] -> sets $node_port and $node_pid
start_node() {
    local name=$1 extra=${2:-} listen=${3:-127.0.0.1:0}
    cat > "$work/$name.toml" <<TOML
listen = "$listen"
history_file = "$work/$name.jsonl"
flood_rate = 0
max_connections = 20000
max_connections_per_ip = 0
$extra
TOML
    RUST_LOG=warn,riftd=info taskset -c 0 target/release/riftd --config "$work/$name.toml" \
        2> "$work/$name.log" &
    node_pid=$!
    pids+=("$node_pid")
    node_port=$(listen_port "$work/$name.log")
}
start_node single
single_port=$node_port single_pid=$node_pid
start_node node-a "cluster_url = \"nats://127.0.0.1:$nats_port\"
node_name = \"bench-a\""
a_port=$node_port a_pid=$node_pid
start_node node-b "cluster_url = \"nats://127.0.0.1:$nats_port\"
node_name = \"bench-b\""
b_port=$node_port b_pid=$node_pid
# Two nodes behind one port (reuse_port): the port is chosen first.
shared_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_node node-c "cluster_url = \"nats://127.0.0.1:$nats_port\"
node_name = \"bench-c\"
reuse_port = true" "127.0.0.1:$shared_port"
c_pid=$node_pid
start_node node-d "cluster_url = \"nats://127.0.0.1:$nats_port\"
node_name = \"bench-d\"
reuse_port = true" "127.0.0.1:$shared_port"
d_pid=$node_pid
nats_pid=${pids[0]}
# The processes whose CPU each run reports, and their names.
server_pids=("$single_pid" "$a_pid" "$b_pid" "$c_pid" "$d_pid" "$nats_pid")
server_names=(single node-a node-b node-c node-d nats)

cpu_ticks() { # pid -> utime+stime in ticks
    awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
bench() { taskset -c 1 target/release/riftbench fanout "$@" --ready-code 208 --json; }
field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, d))" "$1" "$2"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# by_port JSON... -> PORT:MEDIAN,... of the deliveries per receiving port
by_port() {
    python3 -c '
import json, statistics, sys
runs = [json.loads(arg)["deliveries_per_sec_by_port"] for arg in sys.argv[1:]]
print(",".join(f"{port}:{statistics.median_low(run[port] for run in runs)}" for port in runs[0]))
' "$@"
}
median_of() { local expr=$1; shift; for json in "$@"; do field "$json" "$expr"; done | median; }

# run LABEL riftbench-args... : RUNS runs, medians, and the CPU each server
# process used over all of them (% of one core over the runs' wall time).
run() {
    local label=$1; shift
    local results=() before=() after=() started ended
    for pid in "${server_pids[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    started=$(date +%s.%N)
    for _ in $(seq "$runs"); do results+=("$(bench "$@")"); done
    ended=$(date +%s.%N)
    for pid in "${server_pids[@]}"; do after+=("$(cpu_ticks "$pid")"); done
    local cpu=""
    for index in "${!server_pids[@]}"; do
        local pct
        pct=$(awk -v b="${before[$index]}" -v a="${after[$index]}" -v s="$started" -v e="$ended" \
            'BEGIN { printf "%.0f", (a - b) / 100 / (e - s) * 100 }')
        [ "$pct" != 0 ] && cpu="$cpu ${server_names[$index]} $pct%"
    done
    local lost=0
    for json in "${results[@]}"; do lost=$((lost + $(field "$json" lost))); done
    printf '%-36s accepted %7s/s  deliveries %8s/s %-26s p50 %7s ms  p99 %8s ms  lost %s  gen %s%%  CPU:%s\n' \
        "$label" "$(median_of accepted_per_sec "${results[@]}")" \
        "$(median_of deliveries_per_sec "${results[@]}")" \
        "($(by_port "${results[@]}"))" \
        "$(median_of p50_ms "${results[@]}")" "$(median_of p99_ms "${results[@]}")" \
        "$lost" "$(median_of generator_cpu_pct "${results[@]}")" "$cpu"
}

echo "runs: $runs (medians); ports: single $single_port, node-a $a_port, node-b $b_port, node-c and node-d $shared_port (reuse_port)"
# A single node takes messages ~30x faster than the cluster: it gets more
# of them per run (SINGLE_MESSAGES), so its runs last long enough to measure.
cluster_messages=${MESSAGES:-5000} single_messages=${SINGLE_MESSAGES:-50000}
echo "== throughput: 100 receivers, 4 publishers x K messages of 64 B, window 64 each"
load="--receivers 100 --publishers 4 --size 64 --window 64"
# shellcheck disable=SC2086
run "single node (K=$single_messages)" --port "$single_port" $load --messages "$single_messages"
# shellcheck disable=SC2086
run "cluster: recv A, pub B (K=$cluster_messages)" --port "$b_port" --receive-port "$a_port" \
    $load --messages "$cluster_messages"
# shellcheck disable=SC2086
run "cluster: recv A+B, pub B (K=$cluster_messages)" --port "$b_port" \
    --receive-port "$a_port,$b_port" $load --messages "$cluster_messages"
# Everyone on the shared port: the kernel picks node-c or node-d for each
# receiver and publisher.
# shellcheck disable=SC2086
run "reuse_port: C+D on one port (K=$cluster_messages)" --port "$shared_port" \
    $load --messages "$cluster_messages"
echo "== latency: 10 receivers, 1 publisher x 1000 messages, one at a time (window 1)"
light="--receivers 10 --publishers 1 --messages 1000 --size 64 --window 1"
# shellcheck disable=SC2086
run "single node" --port "$single_port" $light
# shellcheck disable=SC2086
run "cluster: recv A, publish B" --port "$b_port" --receive-port "$a_port" $light
# shellcheck disable=SC2086
run "reuse_port: C+D on one port" --port "$shared_port" $light
# How the kernel spread the reuse_port runs' connections (each logs in once).
echo "reuse_port: logins on node-c $(grep -c ' login ' "$work/node-c.log" || true), node-d $(grep -c ' login ' "$work/node-d.log" || true)"
