#!/usr/bin/env bash
# Resident memory of an idle `berth server`: empty, and with 10 deployed apps
# (examples/plain, each with one instance). Target: under 30 MiB with 10 apps.
# Peer: an idle nginx (master + 2 workers) measured in the same run.
source "$(dirname "$0")/lib.sh"
APPS=${APPS:-10}
build_berth
start_server
sleep 1
empty=$(berth_rss_kib); empty_pss=$(berth_pss_kib)
copy_example plain "$WORK/plain"
for i in $(seq "$APPS"); do
    (cd "$WORK/plain" && "$BERTH" up --app "plain-$i" >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
done
sleep 3
loaded=$(berth_rss_kib); loaded_pss=$(berth_pss_kib)
nginx_kib=""
if command -v nginx >/dev/null; then
    mkdir -p "$WORK/nginx"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf 'worker_processes 2; pid %s/nginx.pid; error_log %s/nginx/error.log;\nevents {}\nhttp { access_log off; server { listen 127.0.0.1:%s; } }\n' "$WORK" "$WORK" "$port" >"$WORK/nginx.conf"
    nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" && sleep 0.5
    master=$(cat "$WORK/nginx.pid")
    nginx_kib=0
    for pid in "$master" $(pgrep -P "$master"); do
        nginx_kib=$((nginx_kib + $(rss_kib "$pid")))
    done
fi
awk -v e="$empty" -v l="$loaded" -v ep="$empty_pss" -v lp="$loaded_pss" -v n="${nginx_kib:-0}" -v apps="$APPS" 'BEGIN {
    printf "idle berth (server + spawner + standby), RSS: %.1f MiB empty, %.1f MiB with %d apps (target < 30 MiB); %.2f MiB per app\n", e/1024, l/1024, apps, (l-e)/1024/apps
    printf "the same by PSS: %.1f MiB empty, %.1f MiB with %d apps\n", ep/1024, lp/1024, apps
    if (n > 0) printf "idle nginx (master + 2 workers): %.1f MiB; berth with %d apps / nginx: %.2fx\n", n/1024, apps, l/n
}'
