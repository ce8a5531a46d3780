#!/usr/bin/env bash
# Runs inside the container booted by tests/systemd/walk.sh (as root, with
# the freshly built riftd at /root/riftd-built and contrib/ and README.md at
# /root/src). Every wait is bounded: a read of what riftd sends (10 s), a log
# line or a unit state (polled for at most 30 s).
#
#   inside.sh first-boot | second-boot
set -euo pipefail

step() { echo; echo "== $*"; }
fail() {
    echo "FAIL: $*"
    echo "--- systemctl status riftd"; systemctl status riftd --no-pager -l || true
    echo "--- journalctl -u riftd"; journalctl -u riftd -b --no-pager -n 60 || true
    exit 1
}

# The sh block that follows README's line matching $1 (the first ``` block
# after it), one command per line.
readme_block() {
    awk -v heading="$1" '
        found == 0 && index($0, heading) == 1 { found = 1; next }
        found == 1 && /^```sh$/ { found = 2; next }
        found == 2 && /^```$/ { exit }
        found == 2 { print }
    ' /root/src/README.md
}

# Runs README's block after $1 line by line, exactly, from /root/src (the
# clone), with $2 on stdin; `cargo install` is replaced by installing the
# binary the test built.
run_readme_block() {
    local line block
    block=$(readme_block "$1")
    [ -n "$block" ] || fail "README.md has no sh block after '$1'"
    while IFS= read -r line; do
        case $line in
            "cargo install "*) line="install -m 0755 /root/riftd-built /usr/local/bin/riftd  # for: $line" ;;
        esac
        echo "# $line"
        (cd /root/src && bash -eo pipefail -c "$line" <<<"${2:-}") || fail "README step failed: $line"
    done <<<"$block"
}

# connect VAR HOST PORT: opens a TCP connection; its descriptor goes to VAR.
connect() {
    local conn_fd
    exec {conn_fd}<>"/dev/tcp/$2/$3" || fail "cannot connect to $2 port $3"
    printf -v "$1" %s "$conn_fd"
}
send() { echo "  [$1] > $2"; printf '%s\n' "$2" >&"$1"; }
# expect FD NEEDLE: reads lines until one contains NEEDLE (10 s per line).
expect() {
    local line n=0
    while [ $n -lt 500 ] && IFS= read -r -t 10 line <&"$1"; do
        n=$((n + 1))
        echo "  [$1] < $line"
        if [[ $line == *"$2"* ]]; then return 0; fi
    done
    fail "no line with '$2' on connection $1"
}
close() { eval "exec $1>&-"; }

# A JSON client logged in as $2 with password $3 (or none); fd in VAR $1.
json_login() {
    local login_fd
    connect login_fd "${4:-127.0.0.1}" "${5:-5050}"
    expect "$login_fd" '"code":210'
    send "$login_fd" "{\"code\":110,\"username\":\"$2\"}"
    if [ -n "$3" ]; then
        expect "$login_fd" '"code":211'
        send "$login_fd" "{\"code\":111,\"password\":\"$3\"}"
    fi
    expect "$login_fd" '"code":202'
    printf -v "$1" %s "$login_fd"
}

# How many lines of riftd's log in this boot contain $1.
log_count() { journalctl -u riftd -b -o cat --no-pager | grep -cF -- "$1" || true; }
# wait_log NEEDLE BEFORE: waits until more than BEFORE lines contain NEEDLE.
wait_log() {
    for _ in $(seq 300); do
        [ "$(log_count "$1")" -gt "$2" ] && { echo "  log: $1"; return 0; }
        sleep 0.1
    done
    fail "riftd never logged '$1'"
}
prop() { systemctl show -p "$2" --value "$1"; }
# wait_prop UNIT PROPERTY VALUE
wait_prop() {
    for _ in $(seq 300); do
        [ "$(prop "$1" "$2")" = "$3" ] && return 0
        sleep 0.1
    done
    fail "$1: $2 is '$(prop "$1" "$2")', not '$3', after 30 s"
}

first_boot() {
    step "the README's install steps, exactly"
    run_readme_block "## Install as a systemd service"
    [ "$(systemctl is-active riftd)" = active ] || fail "riftd is not active after the README's steps"
    [ "$(systemctl is-enabled riftd)" = enabled ] || fail "riftd is not enabled"
    local starts
    starts=$(log_count "listening on")
    echo "  riftd is active (Type=notify) and logged 'listening on' $starts time(s)"

    step "no warning about the ConfigurationDirectory mode at start or reload"
    if journalctl -b --no-pager -o cat | grep -F "mode is different"; then
        fail "systemd warns about a directory mode"
    fi

    step "chat over TCP: a JSON client and a text client, shared password"
    local pw alice bob
    pw=$(head -n1 /etc/riftd/password)
    [ -n "$pw" ] || fail "the README's steps left /etc/riftd/password empty"
    json_login alice alice "$pw"
    connect bob ::1 5051
    expect "$bob" '"code":210'
    send "$bob" bob
    expect "$bob" "password:"
    send "$bob" "$pw"
    expect "$bob" "#lobby"
    expect "$alice" '"new":"bob"'
    send "$bob" "hello from bob"
    expect "$alice" '"text":"hello from bob"'
    send "$alice" '{"code":100,"message":"hello from alice"}'
    expect "$bob" "hello from alice"
    expect "$alice" '"text":"hello from alice"'

    step "reload: a new password applies, and the log says when"
    local reloaded new_pw
    reloaded=$(log_count "SIGHUP: configuration reloaded")
    new_pw="second-$pw"
    printf '%s\n' "$new_pw" >/etc/riftd/password
    systemctl reload riftd
    wait_log "SIGHUP: configuration reloaded" "$reloaded"
    local carol
    json_login carol carol "$new_pw"
    close "$carol"

    step "kill -9: systemd restarts riftd, history intact"
    local pid
    pid=$(prop riftd MainPID)
    kill -9 "$pid"
    expect_eof "$alice"
    for _ in $(seq 300); do
        local now
        now=$(prop riftd MainPID)
        if [ "$now" != 0 ] && [ "$now" != "$pid" ] && [ "$(systemctl is-active riftd)" = active ]; then break; fi
        sleep 0.1
    done
    [ "$(systemctl is-active riftd)" = active ] || fail "riftd was not restarted after kill -9"
    [ "$(prop riftd NRestarts)" -ge 1 ] || fail "NRestarts is $(prop riftd NRestarts)"
    echo "  restarted: pid $pid -> $(prop riftd MainPID)"
    json_login alice alice "$new_pw"
    expect "$alice" '"text":"hello from alice"'

    step "stop: clients are told 205"
    systemctl stop riftd &
    local stopper=$!
    expect "$alice" '"code":205'
    wait "$stopper" || fail "systemctl stop failed"
    [ "$(systemctl is-active riftd)" = inactive ] || fail "riftd is $(systemctl is-active riftd) after stop"
    [ "$(prop riftd Result)" = success ] || fail "stop result: $(prop riftd Result)"

    step "a refused config (exit 2) is not restarted"
    cp /etc/riftd/riftd.toml /root/riftd.toml.good
    echo 'no_such_key = 1' >>/etc/riftd/riftd.toml
    if systemctl start riftd; then fail "riftd started with a refused config"; fi
    [ "$(prop riftd ExecMainStatus)" = 2 ] || fail "exit status $(prop riftd ExecMainStatus), not 2"
    [ "$(prop riftd SubState)" = failed ] || fail "riftd is '$(prop riftd SubState)' after exit 2, not 'failed' (is it restarting?)"
    journalctl -u riftd -b -p err -o cat --no-pager | grep -F no_such_key >/dev/null \
        || fail "the reason is not in journalctl -p err"
    echo "  failed with status 2, not restarted; journalctl -p err names no_such_key"
    cp /root/riftd.toml.good /etc/riftd/riftd.toml
    systemctl reset-failed riftd
    systemctl start riftd

    step "accounts as the README says: the service can read the users file"
    reloaded=$(log_count "SIGHUP: configuration reloaded")
    run_readme_block '**Accounts** (`auth = "accounts"`)' "alice-account-pw"
    wait_log "SIGHUP: configuration reloaded" "$reloaded"
    ls -l /var/lib/riftd/users
    json_login alice alice "alice-account-pw"
    expect "$alice" '"text":"hello from alice"'
    send "$alice" '{"code":100,"message":"said under accounts"}'
    expect "$alice" '"text":"said under accounts"'
    close "$alice"

    step "systemd-analyze security"
    local exposure
    exposure=$(systemd-analyze security riftd.service --no-pager | tail -n1)
    echo "  $exposure"
    awk -v line="$exposure" 'BEGIN {
        n = split(line, words, " ")
        for (i = 1; i <= n; i++) if (words[i] ~ /^[0-9]+\.[0-9]+$/) exit !(words[i] + 0 <= 2.0)
        exit 1
    }' || fail "exposure above 2.0: $exposure"
}

# expect_eof FD: the connection ends (riftd died or closed it) within 10 s.
expect_eof() {
    local line status n=0
    while [ $n -lt 500 ]; do
        status=0
        IFS= read -r -t 10 line <&"$1" || status=$?
        if [ $status -eq 0 ]; then
            n=$((n + 1))
            echo "  [$1] < $line"
            continue
        fi
        [ $status -gt 128 ] && fail "connection $1 still open after 10 s"
        break
    done
    close "$1"
}

second_boot() {
    step "the enabled unit started at boot, with its history"
    [ "$(systemctl is-active riftd)" = active ] || fail "riftd is not active after boot"
    local alice
    json_login alice alice "alice-account-pw"
    expect "$alice" '"text":"said under accounts"'
    close "$alice"

    step "socket activation as the README says"
    run_readme_block '**Socket activation**'
    [ "$(systemctl is-active riftd.socket)" = active ] || fail "riftd.socket is not active"
    [ "$(systemctl is-active riftd)" = active ] || fail "riftd is not active"
    wait_log "socket activation: systemd passed 1 plain and 0 TLS" 0
    json_login alice alice "alice-account-pw" 127.0.0.1 5050
    local bob
    connect bob ::1 5050
    expect "$bob" '"code":210'
    send "$bob" '{"code":110,"username":"bob"}'
    expect "$bob" '"code":211'
    close "$bob"

    step "the first connection starts riftd"
    systemctl stop riftd
    [ "$(systemctl is-active riftd)" = inactive ] || fail "riftd still $(systemctl is-active riftd)"
    [ "$(systemctl is-active riftd.socket)" = active ] || fail "riftd.socket stopped with riftd"
    local activated
    activated=$(log_count "socket activation: systemd passed")
    json_login alice alice "alice-account-pw" 127.0.0.1 5050
    expect "$alice" '"text":"said under accounts"'
    [ "$(systemctl is-active riftd)" = active ] || fail "the connection did not start riftd"
    [ "$(log_count "socket activation: systemd passed")" -gt "$activated" ] || fail "not socket-activated"

    step "a socket named tls speaks TLS (riftd-tls.socket)"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -keyout /etc/riftd/key.pem -out /etc/riftd/cert.pem 2>/dev/null
    chgrp riftd /etc/riftd/key.pem /etc/riftd/cert.pem
    chmod 0640 /etc/riftd/key.pem /etc/riftd/cert.pem
    printf 'tls_cert = "cert.pem"\ntls_key = "key.pem"\n' >>/etc/riftd/riftd.toml
    install -m 0644 /root/src/contrib/riftd-tls.socket /etc/systemd/system/riftd-tls.socket
    systemctl daemon-reload
    # systemd does not start a socket unit while its service runs.
    systemctl stop riftd
    systemctl enable --now riftd-tls.socket
    systemctl start riftd
    wait_log "socket activation: systemd passed 1 plain and 1 TLS" 0
    coproc TLS { exec openssl s_client -quiet -connect 127.0.0.1:5443 -servername localhost 2>/dev/null; }
    expect "${TLS[0]}" '"code":210'
    send "${TLS[1]}" '{"code":110,"username":"tina"}'
    expect "${TLS[0]}" '"code":211'
    kill "$TLS_PID" 2>/dev/null || true
}

case ${1:-} in
    first-boot) first_boot ;;
    second-boot) second_boot ;;
    *) echo "usage: inside.sh first-boot|second-boot" >&2; exit 2 ;;
esac
echo
echo "== $1: every step passed"
