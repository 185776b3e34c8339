#!/usr/bin/env bash
# HTTPS through berth's router against nginx and Caddy as TLS reverse
# proxies to the same instance of examples/hello, in one run (wrk): requests/s
# and p99 on keep-alive connections, then new TLS handshakes per second (one
# request per connection). All three use an ECDSA P-256 certificate
# (berth's from its own CA; nginx's and Caddy's from openssl).
# Targets: berth >= nginx and >= Caddy on both.
# As root: wrk sees hello.localhost through a private /etc/hosts (a mount
# namespace), so each proxy is asked for it by SNI.
source "$(dirname "$0")/lib.sh"
for tool in wrk nginx caddy openssl unshare; do
    command -v "$tool" >/dev/null || {
        echo "needs wrk, nginx, caddy and openssl: apt-get install -y wrk nginx-light caddy openssl" >&2
        exit 1
    }
done
[ "$(id -u)" = 0 ] || { echo "run as root (wrk resolves hello.localhost in a mount namespace)" >&2; exit 1; }
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
build_berth
start_server --https 127.0.0.1:0
HTTPS_PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["https_url"].rsplit(":",1)[1])' "$BERTH_DATA/server.json")
copy_example hello "$WORK/hello"
printf 'app = "hello"\n[[vm]]\ncpus = 2\nmemory = "512mb"\n' >"$WORK/hello/berth.toml"
(cd "$WORK/hello" && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
PORT=$("$BERTH" status --app hello --json | json_field 'd["instances"][0]["port"]')
PID=$("$BERTH" status --app hello --json | json_field 'd["instances"][0]["pid"]')
# nginx and Caddy run in the instance's network namespace (as root it has one),
# reaching it as berth's router does; wrk runs beside each proxy.
IN_NS=()
# The reported pid may be the sandbox's waiting parent, still in the host's
# namespace: look down its tree for the first process in another one.
for candidate in $PID $(pgrep -P "$PID") $(for child in $(pgrep -P "$PID"); do pgrep -P "$child"; done); do
    if [ "$(readlink "/proc/$candidate/ns/net")" != "$(readlink /proc/self/ns/net)" ]; then
        IN_NS=(nsenter "--net=/proc/$candidate/ns/net")
        break
    fi
done
free_port() { "${IN_NS[@]}" python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NGINX_PORT=$(free_port)
CADDY_PORT=$(free_port)
printf '127.0.0.1 localhost hello.localhost\n' >"$WORK/hosts"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=hello.localhost -addext subjectAltName=DNS:hello.localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

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
        listen 127.0.0.1:$NGINX_PORT ssl http2;
        server_name hello.localhost;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_session_cache shared:SSL:10m;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto https;
        }
    }
}
CONF
"${IN_NS[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK/nginx"

cat >"$WORK/Caddyfile" <<CONF
{
    admin off
    auto_https off
    log {
        output discard
    }
}
https://hello.localhost:$CADDY_PORT {
    bind 127.0.0.1
    tls $WORK/cert.pem $WORK/key.pem
    reverse_proxy 127.0.0.1:$PORT
}
CONF
"${IN_NS[@]}" caddy run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 &
CADDY_PID=$!
trap 'kill $CADDY_PID 2>/dev/null; cleanup' EXIT
sleep 1

with_hosts() { # COMMAND…: run with hello.localhost resolving to 127.0.0.1
    unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$WORK/hosts" "$@"
}

run() { # NAME URL IN-NAMESPACE [wrk options…]
    local name=$1 url=$2 in_ns=$3 out
    shift 3
    if [ "$in_ns" = yes ]; then
        out=$("${IN_NS[@]}" unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$WORK/hosts" \
            wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
    else
        out=$(with_hosts wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url")
    fi
    wrk_row "$name" "$out"
}

echo "wrk -t2 -c$CONNECTIONS -d$DURATION over HTTPS (HTTP/1.1), examples/hello, same instance for all three"
printf '%-16s %12s %10s\n' "proxy" "requests/s" "p99"
run nginx "https://hello.localhost:$NGINX_PORT/" yes
run caddy "https://hello.localhost:$CADDY_PORT/" yes
run berth "https://hello.localhost:$HTTPS_PORT/" no
echo "new connections (one request each: a full TLS handshake per request)"
run nginx-new "https://hello.localhost:$NGINX_PORT/" yes -H "Connection: close"
run caddy-new "https://hello.localhost:$CADDY_PORT/" yes -H "Connection: close"
run berth-new "https://hello.localhost:$HTTPS_PORT/" no -H "Connection: close"
awk -v b="$berth_rps" -v n="$nginx_rps" -v c="$caddy_rps" \
    -v bp="$(to_ms "$berth_p99")" -v np="$(to_ms "$nginx_p99")" -v cp="$(to_ms "$caddy_p99")" \
    -v bh="$berth_new_rps" -v nh="$nginx_new_rps" -v ch="$caddy_new_rps" 'BEGIN {
    printf "keep-alive requests/s: berth/nginx %.2fx, berth/caddy %.2fx (target >= 1.0)\n", b/n, b/c
    printf "keep-alive p99: berth %.2f ms, nginx %.2f ms, caddy %.2f ms\n", bp, np, cp
    printf "handshakes/s: berth/nginx %.2fx, berth/caddy %.2fx (target >= 1.0)\n", bh/nh, bh/ch
}'
