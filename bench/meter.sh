#!/usr/bin/env bash
# Metering and budgets: what the meter costs the router, how fast a budget
# acts, and how much the store grows.
#
# Router: requests/s to examples/hello through berth's router with the
# meter on (the default) against the same server started with --no-meter,
# alternating ROUNDS times (wrk). Target: on/off >= 0.98.
#
# Budget: ACTIONS times, a budget of a few requests (a test price table) is
# crossed and the time from the last request over it to the app's last
# instance gone is measured, with the default --meter-interval (10 s).
# Targets: p50 < 10 s, max < 60 s.
#
# Store: a synthetic two months of one-minute flushes for one app
# (crates/berth-store/examples/usage_growth.rs).
source "$(dirname "$0")/lib.sh"
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 1; }
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-2}
ACTIONS=${ACTIONS:-5}
build_berth
mkdir -p "$WORK/prices"
cat >"$WORK/prices/test.toml" <<'TOML'
provider = "test"
title = "Test prices"
valid_from = "2026-12-01"
source = "bench/meter.sh"
[[plans]]
name = "requests"
title = "A tenth of a cent a request"
billed_time = "instance"
usd_per_million_requests = 1000
TOML
start_server --prices "$WORK/prices"
copy_example hello "$WORK/hello"
printf 'app = "hello"\n[[vm]]\ncpus = 2\nmemory = "512mb"\n[logs]\naccess = false\n' >"$WORK/hello/berth.toml"
(cd "$WORK/hello" && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }

rps() { # prints requests/s through the router
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -H "Host: hello.localhost" "$ROUTER_URL/" | awk '/^Requests\/sec/ {print $2}'
}
wait_up() {
    for _ in $(seq 600); do
        curl -sf -H "Host: hello.localhost" "$ROUTER_URL/" >/dev/null && return
        sleep 0.1
    done
    echo "hello did not come back" >&2; exit 1
}

echo "router: wrk -t2 -c$CONNECTIONS -d$DURATION, examples/hello, $ROUNDS rounds each, alternating"
on=(); off=()
for round in $(seq "$ROUNDS"); do
    wait_up; on+=("$(rps)")
    stop_server; start_server --prices "$WORK/prices" --no-meter; wait_up
    off+=("$(rps)")
    stop_server; start_server --prices "$WORK/prices"
done
wait_up
python3 - "${on[*]}" "${off[*]}" <<'PY'
import statistics, sys
on = [float(x) for x in sys.argv[1].split()]
off = [float(x) for x in sys.argv[2].split()]
print(f"  meter on:  {statistics.median(on):10.0f} requests/s  {on}")
print(f"  meter off: {statistics.median(off):10.0f} requests/s  {off}")
print(f"  on/off: {statistics.median(on)/statistics.median(off):.3f}x (target >= 0.98)")
PY

API_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_url"])' "$BERTH_DATA/server.json")
TOKEN=$(cat "$BERTH_DATA/token")
requests_so_far() {
    curl -s -H "Authorization: Bearer $TOKEN" "$API_URL/v1/usage?app=hello&by=day" |
        python3 -c 'import json,sys; print(sum(r["requests"] for r in json.load(sys.stdin)["rows"]))'
}
instances() {
    curl -s -H "Authorization: Bearer $TOKEN" "$API_URL/v1/apps/hello" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["instances"]))'
}
echo "budget: crossing to the last instance gone, $ACTIONS times, --meter-interval 10s"
times=()
for action in $(seq "$ACTIONS"); do
    wait_up
    # A flush after the last requests (the count is settled), then a
    # random phase against the meter's 10 s rhythm.
    sleep $((12 + RANDOM % 10))
    limit=$(( $(requests_so_far) + 3 ))
    "$BERTH" budget set --app hello --requests "$limit" --on-exceed scale-to-zero --price-as test >/dev/null
    for _ in 1 2 3 4; do curl -s -H "Host: hello.localhost" "$ROUTER_URL/" >/dev/null; done
    start=$(date +%s.%N)
    while [ "$(instances)" != 0 ]; do sleep 0.05; done
    times+=("$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(date +%s.%N)" "$start")")
    "$BERTH" budget resume --app hello >/dev/null
done
python3 - "${times[*]}" <<'PY'
import statistics, sys
times = [float(x) for x in sys.argv[1].split()]
print(f"  p50 {statistics.median(times):.1f} s, max {max(times):.1f} s  {[round(t, 1) for t in times]}")
print("  target: p50 < 10 s, max < 60 s")
PY
echo "store:"
(cd "$ROOT" && cargo run -q --release -p berth-store --example usage_growth)
