# Shared by the bench scripts (source it): start a riftd and learn its port.

# listen_port LOG: waits (up to 5 s) for riftd's first "listening on
# 127.0.0.1:PORT" line in LOG and prints PORT; fails if none comes.
listen_port() {
    local log=$1 port=""
    for _ in $(seq 100); do
        port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$log" | head -1 | cut -d: -f2 || true)
        [ -n "$port" ] && { echo "$port"; return 0; }
        sleep 0.05
    done
    echo "riftd did not start; its log:" >&2
    cat "$log" >&2
    return 1
}
