#!/usr/bin/env bash
# Router throughput and latency: examples/hello direct, through berth's router,
# and through nginx as a reverse proxy to the same instance, in one run (wrk).
# Targets: berth >= nginx in requests/s; berth p99 <= 1.2x direct p99.
source "$(dirname "$0")/lib.sh"
command -v wrk >/dev/null && command -v nginx >/dev/null || {
    echo "needs wrk and nginx: apt-get install -y wrk nginx-light" >&2; exit 1; }
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
build_berth
start_server
copy_example hello "$WORK/hello"
# As root, instances get their [[vm]] size as a CPU quota: give the app the
# machine's two cores, as it has when started by hand.
# nginx runs with access_log off: so does berth's router first (a row
# with its access log on follows).
printf 'app = "hello"\n[[vm]]\ncpus = 2\nmemory = "512mb"\n[logs]\naccess = false\n' >"$WORK/hello/berth.toml"
(cd "$WORK/hello" && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
PORT=$("$BERTH" status --app hello --json | json_field 'd["instances"][0]["port"]')
PID=$("$BERTH" status --app hello --json | json_field 'd["instances"][0]["pid"]')
ROUTER_PORT=${ROUTER_URL##*:}
# As root the instance has a network namespace of its own: the direct path
# and nginx run in it (nginx listens on the instance's loopback), so all
# three reach the same instance the same way; berth's router crosses in.
IN_NS=()
# The reported pid may be the sandbox's waiting parent, still in the host's
# namespace: look down its tree for the first process in another one.
for candidate in $PID $(pgrep -P "$PID") $(for child in $(pgrep -P "$PID"); do pgrep -P "$child"; done); do
    if [ "$(readlink "/proc/$candidate/ns/net")" != "$(readlink /proc/self/ns/net)" ]; then
        IN_NS=(nsenter "--net=/proc/$candidate/ns/net")
        break
    fi
done

NGINX_PORT=$("${IN_NS[@]}" python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
    upstream app { server 127.0.0.1:$PORT; keepalive 128; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
CONF
"${IN_NS[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK/nginx"
sleep 0.3

run() { # NAME URL [HOST]
    local out
    if [ -n "${3:-}" ]; then
        out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $3" "$2")
    else
        out=$("${IN_NS[@]}" wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$2")
    fi
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    printf '%-8s %12s %10s %10s %s\n' "$1" "$rps" "$p50" "$p99" "$errors"
    eval "${1}_rps=$rps; ${1}_p99=$p99"
}


echo "wrk -t2 -c$CONNECTIONS -d$DURATION, examples/hello, same instance for all three"
printf '%-8s %12s %10s %10s\n' "path" "requests/s" "p50" "p99"
run direct "http://127.0.0.1:$PORT/"
run nginx "http://127.0.0.1:$NGINX_PORT/"
run berth "http://127.0.0.1:$ROUTER_PORT/" "hello.localhost"
# The same with the router's access log on (the default): a line per
# request stored in the app's logs.
sed -i 's/^access = false$/access = true/' "$WORK/hello/berth.toml"
(cd "$WORK/hello" && "$BERTH" deploy >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
run logged "http://127.0.0.1:$ROUTER_PORT/" "hello.localhost"
awk -v b="$berth_rps" -v l="$logged_rps" -v n="$nginx_rps" -v bp="$(to_ms "$berth_p99")" -v dp="$(to_ms "$direct_p99")" -v np="$(to_ms "$nginx_p99")" 'BEGIN {
    printf "berth/nginx requests/s: %.2fx (target >= 1.0)\n", b/n
    printf "berth with its access log / nginx without: %.2fx\n", l/n
    printf "berth p99 / direct p99: %.2fx (target <= 1.2); nginx p99 / direct p99: %.2fx\n", bp/dp, np/dp
}'
