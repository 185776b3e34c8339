#!/usr/bin/env bash
# Cold start: a request to examples/hello scaled to zero, from sending it to
# its response (the router holds it while one instance starts), against the
# floor: the same binary started by hand, from exec to its first response.
# Both are timed by the same Python client on loopback. Target: p50 under 2x.
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-15}
build_berth
start_server
copy_example hello "$WORK/hello"
cat >"$WORK/hello/berth.toml" <<'TOML'
app = "hello"
[http_service]
auto_stop_machines = true
min_machines_running = 0
idle_timeout = "1s"
TOML
(cd "$WORK/hello" && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
router_port=${ROUTER_URL##*:}
slug_bin=$(ls -d "$BERTH_DATA"/slugs/*/.berth/bin/hello | head -1)

cat >"$WORK/time.py" <<'PY'
import socket, subprocess, sys, time, os

def get(port, host, timeout=30.0):
    """One GET; returns the status line's code, or None if nothing listens yet."""
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return int(data[9:12]) if len(data) >= 12 else None

mode = sys.argv[1]
if mode == "floor":
    binary, port = sys.argv[2], int(sys.argv[3])
    env = dict(os.environ, PORT=str(port))
    start = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while get(port, "localhost") != 200:
        time.sleep(0.0002)
    print(f"{(time.perf_counter() - start) * 1000:.2f}")
    proc.terminate(); proc.wait()
else:
    port = int(sys.argv[2])
    start = time.perf_counter()
    code = get(port, "hello.localhost")
    elapsed = (time.perf_counter() - start) * 1000
    if code != 200:
        sys.exit(f"cold request answered {code}")
    print(f"{elapsed:.2f}")
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_zero() {
    for _ in $(seq 400); do
        n=$("$BERTH" status --app hello --json | json_field 'len(d["instances"])')
        [ "$n" = 0 ] && return 0
        sleep 0.05
    done
    echo "hello never scaled to zero" >&2; exit 1
}

: >"$WORK/cold.ms"; : >"$WORK/floor.ms"
for _ in $(seq "$ROUNDS"); do
    wait_zero
    sleep 0.3
    python3 "$WORK/time.py" cold "$router_port" >>"$WORK/cold.ms"
    python3 "$WORK/time.py" floor "$slug_bin" "$(free_port)" >>"$WORK/floor.ms"
done
cold=$(median <"$WORK/cold.ms"); floor=$(median <"$WORK/floor.ms")
awk -v c="$cold" -v f="$floor" -v r="$ROUNDS" 'BEGIN {
    printf "cold start through the router: p50 %.1f ms; the binary by hand, exec to first response: p50 %.1f ms (%d rounds)\n", c, f, r
    printf "cold start / floor: %.2fx (target < 2x)\n", c/f
}'
