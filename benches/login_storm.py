#!/usr/bin/env python3
"""Measures PING->PONG round trips of one logged-in client while a storm of
wrong-password logins hits riftd (auth = "accounts"), to show that argon2
verification does not stall the event loop.

Usage: benches/login_storm.py [path/to/riftd]   (default: target/release/riftd)
Loopback only; bounded: 200 logins, 400 pings.
"""
import json, os, socket, statistics, subprocess, sys, tempfile, threading, time

riftd = sys.argv[1] if len(sys.argv) > 1 else "target/release/riftd"
work = tempfile.mkdtemp()
config = os.path.join(work, "riftd.toml")
with open(config, "w") as f:
    f.write('listen = "127.0.0.1:0"\nauth = "accounts"\nusers_file = "users"\n')
subprocess.run([riftd, "user", "add", "pinger", "--config", config], input=b"pw\n", check=True,
               stdout=subprocess.DEVNULL)
server = subprocess.Popen([riftd, "--config", config], stderr=subprocess.PIPE,
                          env={**os.environ, "RUST_LOG": "warn,riftd=info"})
port = None
for raw in server.stderr:
    line = raw.decode()
    if "listening on" in line:
        port = int(line.rsplit(":", 1)[1])
        break
threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()

def connect(source="127.0.0.1"):
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return s, s.makefile("rb")

def frame(sock, obj):
    sock.sendall((json.dumps(obj) + "\n").encode())

def until(reader, code):
    while True:
        msg = json.loads(reader.readline())
        if msg["code"] == code:
            return msg

pinger, pin = connect()
frame(pinger, {"code": 110, "username": "pinger"}); frame(pinger, {"code": 111, "password": "pw"})
until(pin, 201)

def rtts(count):
    out = []
    for i in range(count):
        t = time.perf_counter(); frame(pinger, {"code": 108, "token": i}); until(pin, 207)
        out.append((time.perf_counter() - t) * 1000)
    return out

quiet = rtts(200)
done = []
def storm():
    # Each source address and name fails at most 3 times, so throttling
    # (which would answer 429 without hashing) never kicks in: every
    # attempt costs a full argon2 verification.
    for i in range(200):
        s, r = connect(f"127.0.{1 + i // 3 // 250}.{2 + (i // 3) % 250}")
        frame(s, {"code": 110, "username": f"u{i}"}); frame(s, {"code": 111, "password": "wrong"})
        done.append(until(r, 401)["code"]); s.close()
threads = [threading.Thread(target=storm) for _ in range(1)]
started = time.perf_counter()
for t in threads: t.start()
loaded = []
while any(t.is_alive() for t in threads) and len(loaded) < 2000:
    loaded += rtts(10)
for t in threads: t.join()
elapsed = time.perf_counter() - started
server.terminate(); server.wait()
q = sorted(quiet); l = sorted(loaded)
print(f"ping rtt quiet:  median {statistics.median(q):.3f} ms, max {q[-1]:.3f} ms ({len(q)} pings)")
print(f"ping rtt storm:  median {statistics.median(l):.3f} ms, max {l[-1]:.3f} ms ({len(l)} pings)")
print(f"storm: {len(done)} wrong-password logins (each a full argon2 check) in {elapsed:.1f} s ({len(done)/elapsed:.0f}/s)")
