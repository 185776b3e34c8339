#!/usr/bin/env bash
# Density: 100 apps (examples/plain, each with its own build and slug) that
# scale to zero when idle, on one server; the server's resident memory with
# all of them idle at zero instances. Target: under 60 MiB. Peer: the same
# server empty, measured in the same run.
source "$(dirname "$0")/lib.sh"
APPS=${APPS:-100}
build_berth
start_server
sleep 1
empty=$(berth_rss_kib)
copy_example plain "$WORK/plain"
cat >"$WORK/plain/berth.toml" <<'TOML'
[http_service]
auto_stop_machines = true
min_machines_running = 0
idle_timeout = "2s"
TOML
started=$(date +%s)
for i in $(seq "$APPS"); do
    (cd "$WORK/plain" && "$BERTH" up --app "idle-$i" >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
done
deployed=$(( $(date +%s) - started ))
# Wait until every app is at zero instances.
for _ in $(seq 120); do
    running=$("$BERTH" apps --json | json_field 'sum(a["running"] for a in d)')
    [ "$running" = 0 ] && break
    sleep 1
done
sleep 2
loaded=$(berth_rss_kib); loaded_pss=$(berth_pss_kib)
# One of them still answers (a cold start), then goes back to sleep.
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: idle-1.localhost" "$ROUTER_URL/")
awk -v e="$empty" -v l="$loaded" -v lp="$loaded_pss" -v apps="$APPS" -v r="$running" -v code="$code" -v t="$deployed" 'BEGIN {
    printf "%d apps deployed in %ds; instances running once idle: %d; a request to one answered %s\n", apps, t, r, code
    printf "berth RSS (server + spawner + standby): %.1f MiB with %d idle apps at zero (target < 60 MiB); %.1f MiB empty; %.0f KiB per app\n", l/1024, apps, e/1024, (l-e)/apps
    printf "the same by PSS: %.1f MiB\n", lp/1024
}'
