#!/usr/bin/env bash
# Managed PostgreSQL: (1) time from `berth postgres attach` on a fresh app to a
# working DATABASE_URL (a `SELECT 1` through it), cluster already running;
# target under 1 s. (2) pgbench through an app's own credentials against
# pgbench as the superuser on the same server, same run; target equal within
# noise. Needs Debian's postgresql (pgbench, psql).
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-7}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
chmod 711 "$WORK"   # as root, PostgreSQL runs as `postgres` and must pass through
build_berth
start_server

ms() { date +%s%N | awk '{printf "%.0f", $1/1000000}'; }

# Warm-up: the first attach makes the cluster (initdb) and starts it.
"$BERTH" apps create warmup >/dev/null
"$BERTH" postgres attach --app warmup >/dev/null 2>&1

: >"$WORK/attach.ms"
for i in $(seq "$ROUNDS"); do
    "$BERTH" apps create "fresh-$i" >/dev/null
    start=$(ms)
    "$BERTH" postgres attach --app "fresh-$i" >/dev/null 2>&1
    url=$("$BERTH" postgres url --app "fresh-$i")
    psql "$url" -tAc 'SELECT 1' >/dev/null
    echo $(( $(ms) - start )) >>"$WORK/attach.ms"
done
attach_p50=$(median <"$WORK/attach.ms")

"$BERTH" apps create bench >/dev/null
"$BERTH" postgres attach --app bench >/dev/null 2>&1
app_url=$("$BERTH" postgres url --app bench)
port=$(cat "$BERTH_DATA/postgres/port")
super_url="postgres://berth:$(cat "$BERTH_DATA/postgres/superuser.password")@127.0.0.1:$port/postgres"
# Both run against the same tables (the app's database), so the only
# difference is whose credentials the connections use.
super_db_url="${super_url%/postgres}/app_bench"
pgbench -q -i -s 10 "$app_url" >/dev/null 2>&1

tps() { pgbench -c 4 -j 2 -T "$SECONDS_PER_RUN" "$1" 2>/dev/null | awk '/^tps/ {printf "%d", $3}'; }
: >"$WORK/app.tps"; : >"$WORK/super.tps"
# ABBA order, so drift (checkpoints, the page cache) hits both alike.
for order in app super super app app super super app app super; do
    if [ "$order" = app ]; then
        tps "$app_url" >>"$WORK/app.tps"; echo >>"$WORK/app.tps"
    else
        tps "$super_db_url" >>"$WORK/super.tps"; echo >>"$WORK/super.tps"
    fi
done
app_tps=$(median <"$WORK/app.tps")
super_tps=$(median <"$WORK/super.tps")
awk -v a="$attach_p50" -v at="$app_tps" -v st="$super_tps" -v r="$ROUNDS" 'BEGIN {
    printf "postgres attach → working DATABASE_URL: p50 %d ms over %d fresh apps (target < 1000 ms)\n", a, r
    printf "pgbench (TPC-B-like, scale 10, 4 clients, 5 runs each in ABBA order, medians): app role %d tps, superuser %d tps (same database) → %.2fx\n", at, st, at/st
}'
