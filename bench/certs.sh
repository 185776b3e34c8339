#!/usr/bin/env bash
# Router memory with many certificates: berth serving HTTPS for N custom
# domains of one app (N=1000 by default), each name's certificate loaded by a
# TLS handshake with it, against nginx with N server blocks each with its own
# ECDSA P-256 certificate, measured in the same run. Prints the memory (PSS:
# pages nginx's workers share with their master count once) each holds per
# certificate and the ratio.
# Target: berth's memory per certificate no more than nginx's.
source "$(dirname "$0")/lib.sh"
for tool in nginx openssl python3; do
    command -v "$tool" >/dev/null || { echo "needs nginx, openssl, python3" >&2; exit 1; }
done
N=${N:-1000}
build_berth
start_server --https 127.0.0.1:0 --no-isolation
HTTPS_PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["https_url"].rsplit(":",1)[1])' "$BERTH_DATA/server.json")
copy_example plain "$WORK/plain"
{
    printf 'app = "many"\n[http_service]\ndomains = ['
    for i in $(seq "$N"); do printf '"site-%d.example.org",' "$i"; done
    printf ']\n'
} >"$WORK/plain/berth.toml"
(cd "$WORK/plain" && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
sleep 2

handshakes() { # PORT: one TLS handshake per name, by SNI; prints how many succeeded
    python3 - "$1" "$N" <<'PY'
import socket, ssl, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
ok = 0
for i in range(1, n + 1):
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw, server_hostname=f"site-{i}.example.org") as tls:
            cert = tls.getpeercert(binary_form=True)
            ok += 1 if cert else 0
print(ok)
PY
}

before=$(berth_pss_kib)
served=$(handshakes "$HTTPS_PORT")
sleep 1
after=$(berth_pss_kib)

# nginx: the same names, each with a certificate of its own, loaded at start.
mkdir -p "$WORK/nginx" "$WORK/certs"
NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/certs/key.pem"
{
    printf 'worker_processes 2; pid %s/nginx.pid; error_log %s/nginx/error.log;\n' "$WORK" "$WORK"
    printf 'events {}\nhttp {\n access_log off;\n server_names_hash_bucket_size 128;\n server_names_hash_max_size 4096;\n'
    printf ' server { listen 127.0.0.1:%s ssl default_server; ssl_certificate %s/certs/site-1.pem; ssl_certificate_key %s/certs/site-1.key; return 404; }\n' "$NGINX_PORT" "$WORK" "$WORK"
    for i in $(seq "$N"); do
        printf ' server { listen 127.0.0.1:%s ssl; server_name site-%d.example.org; ssl_certificate %s/certs/site-%d.pem; ssl_certificate_key %s/certs/site-%d.key; return 200; }\n' \
            "$NGINX_PORT" "$i" "$WORK" "$i" "$WORK" "$i"
    done
    printf '}\n'
} >"$WORK/nginx.conf"
for i in $(seq "$N"); do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=site-$i.example.org" -addext "subjectAltName=DNS:site-$i.example.org" \
        -keyout "$WORK/certs/site-$i.key" -out "$WORK/certs/site-$i.pem" 2>/dev/null
done
nginx_total() {
    local master total=0
    master=$(cat "$WORK/nginx.pid")
    for pid in "$master" $(pgrep -P "$master"); do total=$((total + $(pss_kib "$pid"))); done
    echo "$total"
}
printf 'worker_processes 2; pid %s/nginx.pid; error_log %s/nginx/error.log;\nevents {}\nhttp { access_log off; server { listen 127.0.0.1:%s ssl; ssl_certificate %s/certs/site-1.pem; ssl_certificate_key %s/certs/site-1.key; } }\n' \
    "$WORK" "$WORK" "$NGINX_PORT" "$WORK" "$WORK" >"$WORK/nginx-one.conf"
nginx -c "$WORK/nginx-one.conf" -p "$WORK/nginx" && sleep 0.5
nginx_one=$(nginx_total)
nginx -c "$WORK/nginx-one.conf" -p "$WORK/nginx" -s stop 2>/dev/null && sleep 0.5
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" && sleep 0.5
nginx_served=$(handshakes "$NGINX_PORT")
nginx_many=$(nginx_total)
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" -s stop 2>/dev/null

awk -v n="$N" -v b0="$before" -v b1="$after" -v bs="$served" -v g0="$nginx_one" -v g1="$nginx_many" -v gs="$nginx_served" 'BEGIN {
    bper = (b1 - b0) / n; gper = (g1 - g0) / n
    printf "%d names, handshakes answered: berth %d, nginx %d\n", n, bs, gs
    printf "berth, PSS: %.1f MiB before the handshakes, %.1f MiB after: %.1f KiB per certificate\n", b0/1024, b1/1024, bper
    printf "nginx (master + 2 workers), PSS: %.1f MiB with one certificate, %.1f MiB with %d: %.1f KiB per certificate\n", g0/1024, g1/1024, n, gper
    printf "memory per certificate: berth/nginx %.2fx (target <= 1.0)\n", bper / gper
}'
