#!/usr/bin/env bash
# Chat across a riftd cluster while faults are injected (issue 15), on
# loopback: two riftd nodes on NATS (one nats-server, or three as a NATS
# cluster), riftd-chaos chatting across them, and one fault per scenario.
# riftd-chaos prints what became of every message (sent, acknowledged,
# refused, delivered, lost, duplicated) and exits 1 if anything
# acknowledged was lost or anything was sent twice.
#
# Usage: benches/chaos.sh [SCENARIO...]   (default: all of them)
#   node-kill     kill -9 node B at 3 s, start it again at 6 s
#   nats-freeze   SIGSTOP the nats-server at 3 s, SIGCONT at 7 s
#   nats-restart  kill the nats-server at 3 s, start it again (same port and
#                 store) at 5 s
#   nats-member   three nats-servers (stream and buckets replicated 3
#                 times): kill -9 one at 3 s, start it again at 8 s
# Environment: CHAOS_SECONDS (chat time, default 12), CHAOS_CLIENTS (8),
# CHAOS_RATE (messages per second per client, 20).
# Needs nats-server >= 2.11: $RIFTD_NATS_SERVER, else what
# tests/cluster/nats-server.sh prints. Bounded: each scenario ends with its
# chat time plus a settle time; every process started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
nats_server=${RIFTD_NATS_SERVER:-$(tests/cluster/nats-server.sh)}
seconds=${CHAOS_SECONDS:-12}
clients=${CHAOS_CLIENTS:-8}
rate=${CHAOS_RATE:-20}
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(node-kill nats-freeze nats-restart nats-member)
cargo build --release -q -p riftd --bin riftd -p riftd-bench --bin riftd-chaos

work=""
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
    [ -z "$work" ] || rm -rf "$work"
}
trap stop_all EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_listening() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# start_nats I: starts NATS server I (0-based) of ${#nats_ports[@]}, with
# its store in $work/nats-I; sets nats_pid[I].
declare -a nats_ports cluster_ports monitor_ports nats_pid
start_nats() {
    local i=$1 routes=() args=()
    if [ ${#nats_ports[@]} -gt 1 ]; then
        for port in "${cluster_ports[@]}"; do routes+=("nats://127.0.0.1:$port"); done
        args=(--cluster_name riftd-chaos -n "nats-$i"
              --cluster "nats://127.0.0.1:${cluster_ports[$i]}"
              --routes "$(IFS=,; echo "${routes[*]}")")
    fi
    "$nats_server" -js -a 127.0.0.1 -p "${nats_ports[$i]}" -m "${monitor_ports[$i]}" \
        -sd "$work/nats-$i" "${args[@]}" >> "$work/nats-$i.log" 2>&1 &
    nats_pid[$i]=$!
    pids+=("${nats_pid[$i]}")
}

# wait_healthy I: until server I's /healthz says JetStream is ready (a NATS
# cluster has elected its meta leader), at most 30 s.
wait_healthy() {
    python3 - "${monitor_ports[$1]}" <<'PY'
import sys, time, urllib.request
deadline = time.time() + 30
while time.time() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=2) as answer:
            if answer.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(f"nats-server on monitor port {sys.argv[1]} never became healthy")
PY
}

# start_node NAME PORT: a riftd node on PORT; sets node_pid.
start_node() {
    local name=$1 port=$2 urls=()
    for p in "${nats_ports[@]}"; do urls+=("\"nats://127.0.0.1:$p\""); done
    cat > "$work/$name.toml" <<TOML
listen = "127.0.0.1:$port"
history_file = "$work/$name.jsonl"
flood_rate = 0
cluster_url = [$(IFS=,; echo "${urls[*]}")]
node_name = "$name"
$replicas_line
TOML
    local before
    before=$(cat "$work/$name.log" 2>/dev/null | wc -l)
    RUST_LOG=warn,riftd=info target/release/riftd --config "$work/$name.toml" \
        >> "$work/$name.log" 2>&1 &
    node_pid=$!
    pids+=("$node_pid")
    # riftd binds its port before it reaches NATS: ready is its log line
    # saying it listens, which comes after the cluster set-up.
    for _ in $(seq 300); do
        tail -n "+$((before + 1))" "$work/$name.log" | grep -q "listening on 127.0.0.1:$port" && return 0
        kill -0 "$node_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "riftd $name did not get ready; its log:" >&2
    cat "$work/$name.log" >&2
    return 1
}

# run SCENARIO: one fresh cluster, the chat, the fault; prints the report.
run() {
    local scenario=$1 servers=1
    [ "$scenario" = nats-member ] && servers=3
    work=$(mktemp -d)
    nats_ports=() cluster_ports=() monitor_ports=() nats_pid=()
    for i in $(seq 0 $((servers - 1))); do
        nats_ports+=("$(free_port)")
        cluster_ports+=("$(free_port)")
        monitor_ports+=("$(free_port)")
    done
    replicas_line=""
    [ "$servers" -eq 3 ] && replicas_line="cluster_replicas = 3"
    for i in $(seq 0 $((servers - 1))); do start_nats "$i"; done
    for i in $(seq 0 $((servers - 1))); do wait_healthy "$i" || return 1; done
    local a_port b_port a_pid b_pid
    a_port=$(free_port) b_port=$(free_port)
    # (set -e does not reach into a function called with ||: say it.)
    start_node chaos-a "$a_port" || { echo "node chaos-a did not start" >&2; return 1; }
    a_pid=$node_pid
    start_node chaos-b "$b_port" || { echo "node chaos-b did not start" >&2; return 1; }
    b_pid=$node_pid
    target/release/riftd-chaos --ports "$a_port,$b_port" --clients "$clients" \
        --seconds "$seconds" --rate "$rate" --settle 15 > "$work/report.json" &
    local chaos=$!
    sleep 3
    case $scenario in
        node-kill)
            kill -9 "$b_pid"; sleep 3
            start_node chaos-b "$b_port" ;;
        nats-freeze)
            kill -STOP "${nats_pid[0]}"; sleep 4
            kill -CONT "${nats_pid[0]}" ;;
        nats-restart)
            kill -9 "${nats_pid[0]}"; sleep 2
            start_nats 0; wait_healthy 0 ;;
        nats-member)
            kill -9 "${nats_pid[2]}"; sleep 5
            start_nats 2; wait_healthy 2 ;;
        *) echo "unknown scenario $scenario" >&2; return 2 ;;
    esac
    local status=0
    wait "$chaos" || status=$?
    printf '%s %s\n' "$scenario" "$(cat "$work/report.json")"
    if [ "$status" -ne 0 ]; then
        echo "--- $scenario failed; the node logs:" >&2
        tail -n 20 "$work"/chaos-*.log "$work"/nats-*.log >&2
    fi
    if [ "$status" -ne 0 ]; then
        echo "--- kept $work (logs, stores) for a look" >&2
        work=""
    fi
    stop_all
    work=""
    return "$status"
}

failed=0
for scenario in "${scenarios[@]}"; do
    run "$scenario" || failed=1
done
exit "$failed"
