#!/usr/bin/env bash
# The dashboard's cost: the server's memory (RSS) before the dashboard is
# used and after ROUNDS loads of an app's page (with its logs, events and
# charts), and the app page's time to first byte on loopback (the server's
# time, p50 and p99), against the API's JSON status of the same app as the
# peer. Targets: < +10 MiB; app page p50 < 50 ms.
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-200}
build_berth
start_server
copy_example hello "$WORK/hello"
(cd "$WORK/hello" && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
API_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_url"])' "$BERTH_DATA/server.json")
TOKEN=$(cat "$BERTH_DATA/token")
# Some traffic and log lines for the page to show.
for _ in $(seq 200); do curl -s -o /dev/null -H "Host: hello.localhost" "$ROUTER_URL/"; done
sleep 11 # one chart sample

before=$(rss_kib "$SERVER_PID")
cat >"$WORK/pages.py" <<'PY'
import statistics, sys, time, urllib.parse, urllib.request, http.cookiejar
api, token, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
opener.open(f"{api}/ui/login", data=urllib.parse.urlencode({"token": token}).encode())
def timed(url, headers=None):
    times = []
    for _ in range(rounds):
        request = urllib.request.Request(url, headers=headers or {})
        start = time.perf_counter()
        response = opener.open(request)
        response.read(1)
        times.append(time.perf_counter() - start)
        response.read()
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000
page = timed(f"{api}/ui/apps/hello")
status = timed(f"{api}/v1/apps/hello", {"Authorization": f"Bearer {token}"})
print(f"  app page (/ui/apps/hello)  p50 {page[0]:6.1f} ms  p99 {page[1]:6.1f} ms")
print(f"  API status (/v1/apps/hello) p50 {status[0]:6.1f} ms  p99 {status[1]:6.1f} ms")
print(f"  page/status p50: {page[0] / status[0]:.1f}x; target: page p50 < 50 ms")
PY
echo "dashboard: $ROUNDS loads of each, time to first byte on loopback"
python3 "$WORK/pages.py" "$API_URL" "$TOKEN" "$ROUNDS"
after=$(rss_kib "$SERVER_PID")
awk -v b="$before" -v a="$after" 'BEGIN {
    printf "server RSS: %.1f MiB before, %.1f MiB after: %+.1f MiB (target < +10 MiB)\n", b/1024, a/1024, (a-b)/1024
}'
