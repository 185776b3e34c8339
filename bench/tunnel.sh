#!/usr/bin/env bash
# Requests through the tunnel against the same requests straight to the home
# server, in one run (wrk): a berth server (the "home") keeps a tunnel to a
# `berth relay`, both on loopback; wrk asks the relay's HTTPS port and then the
# home server's own HTTPS port for examples/hello, over keep-alive
# connections and over new connections (a TLS handshake each, passed through
# the relay undecrypted). Then the relay is killed and restarted ROUNDS times
# and the time until a request through it succeeds again is measured.
# Targets: tunnel requests/s >= 0.7x direct, tunnel p99 <= 2x direct.
# As root: wrk resolves the app's name through a private /etc/hosts.
source "$(dirname "$0")/lib.sh"
for tool in wrk curl unshare; do
    command -v "$tool" >/dev/null || { echo "needs wrk, curl: apt-get install -y wrk curl" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (wrk resolves the app's name in a mount namespace)" >&2; exit 1; }
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-5}
NAME=hello.bench.example.org
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RELAY_HTTP=$(free_port); RELAY_HTTPS=$(free_port); RELAY_TUNNEL=$(free_port)
build_berth
TOKEN=$("$BERTH" relay --dir "$WORK/relay" token add bench --domain '*.bench.example.org' 2>/dev/null)
RELAY_PID=""
start_relay() {
    "$BERTH" relay --dir "$WORK/relay" --http "127.0.0.1:$RELAY_HTTP" --https "127.0.0.1:$RELAY_HTTPS" \
        --tunnel "127.0.0.1:$RELAY_TUNNEL" >>"$WORK/relay.log" 2>&1 &
    RELAY_PID=$!
}
stop_relay() { kill -9 "$RELAY_PID" 2>/dev/null || true; wait "$RELAY_PID" 2>/dev/null || true; }
trap 'stop_relay; cleanup' EXIT
start_relay
start_server --https 127.0.0.1:0 --domain bench.example.org \
    --tunnel "127.0.0.1:$RELAY_TUNNEL" --tunnel-token "$TOKEN"
HTTPS_PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["https_url"].rsplit(":",1)[1])' "$BERTH_DATA/server.json")
copy_example hello "$WORK/hello"
printf 'app = "hello"\n[[vm]]\ncpus = 2\nmemory = "512mb"\n' >"$WORK/hello/berth.toml"
(cd "$WORK/hello" && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
printf '127.0.0.1 localhost %s\n' "$NAME" >"$WORK/hosts"
through_relay() { curl -sk -o /dev/null -w '%{http_code}' --max-time 2 \
    --resolve "$NAME:$RELAY_HTTPS:127.0.0.1" "https://$NAME:$RELAY_HTTPS/" || true; }
for _ in $(seq 100); do [ "$(through_relay)" = 200 ] && break; sleep 0.1; done
[ "$(through_relay)" = 200 ] || { echo "nothing answers through the relay" >&2; cat "$WORK/relay.log" "$WORK/server.log" >&2; exit 1; }

run() { # NAME PORT [wrk options…]
    local name=$1 port=$2
    shift 2
    wrk_row "$name" "$(unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$WORK/hosts" \
        wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "https://$NAME:$port/")"
}

echo "wrk -t2 -c$CONNECTIONS -d$DURATION over HTTPS (HTTP/1.1), examples/hello, same instance"
printf '%-16s %12s %10s\n' "path" "requests/s" "p99"
run direct "$HTTPS_PORT"
run tunnel "$RELAY_HTTPS"
run direct-new "$HTTPS_PORT" -H "Connection: close"
run tunnel-new "$RELAY_HTTPS" -H "Connection: close"
awk -v t="$tunnel_rps" -v d="$direct_rps" -v tp="$(to_ms "$tunnel_p99")" -v dp="$(to_ms "$direct_p99")" \
    -v tn="$tunnel_new_rps" -v dn="$direct_new_rps" -v tnp="$(to_ms "$tunnel_new_p99")" -v dnp="$(to_ms "$direct_new_p99")" 'BEGIN {
    printf "keep-alive: tunnel/direct requests/s %.2fx (target >= 0.7), p99 %.2f ms vs %.2f ms = %.2fx (target <= 2)\n", t/d, tp, dp, tp/dp
    printf "new connections: tunnel/direct requests/s %.2fx, p99 %.2f ms vs %.2f ms = %.2fx\n", tn/dn, tnp, dnp, tnp/dnp
}'

echo "relay restarts: time until a request through it succeeds again ($ROUNDS rounds)"
for _ in $(seq "$ROUNDS"); do
    stop_relay
    start_relay
    started=$(date +%s%N)
    until [ "$(through_relay)" = 200 ]; do sleep 0.02; done
    echo $(( ($(date +%s%N) - started) / 1000000 ))
done | tee "$WORK/reconnects" | tr '\n' ' '
echo
echo "reconnect: median $(median <"$WORK/reconnects") ms (target: back within 5000 ms)"
