#!/usr/bin/env bash
# Logs: ingest and query, each against a peer measured in the same run.
#
# Ingest: an app (a one-off command in its sandbox) prints LINES JSON lines
# as fast as it can; lines per second until berth has stored (or dropped)
# them all, from /metrics, against the same lines written to a file
# (`cat > file`). Targets: >= 100k lines/s, >= 0.5x the file.
#
# Query: a field-and-level filter (`--where 'level>=warn user_id=42'`,
# newest 100) over those lines, p50 of ROUNDS, through the API, against
# grep over the same lines as a JSON file. Target: p50 < 100 ms.
source "$(dirname "$0")/lib.sh"
LINES=${LINES:-1000000}
ROUNDS=${ROUNDS:-10}
build_berth
start_server
copy_example plain "$WORK/plain"
printf 'app = "logbench"\n[logs]\nmax_size = "2gb"\n' >"$WORK/plain/berth.toml"
(cd "$WORK/plain" && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
API_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_url"])' "$BERTH_DATA/server.json")
TOKEN=$(cat "$BERTH_DATA/token")

# One line in 1000 is user 42's, one in four a warning.
GENERATE="awk 'BEGIN { for (i = 0; i < $LINES; i++) printf \"{\\\"level\\\":\\\"%s\\\",\\\"fields\\\":{\\\"message\\\":\\\"request %d done\\\",\\\"user_id\\\":%d,\\\"path\\\":\\\"/api/items/%d\\\"}}\\n\", (i % 4 == 0 ? \"WARN\" : \"INFO\"), i, (i % 1000 == 0 ? 42 : i % 997), i }'"

counts() { # stored dropped
    curl -s -H "Authorization: Bearer $TOKEN" "$API_URL/metrics" |
        awk '/^berth_log_lines_stored_total / {s=$2} /^berth_log_lines_dropped_total / {d=$2} END {printf "%d %d\n", s, d}'
}

# The peer: the same lines into a file.
start=$(date +%s.%N)
sh -c "$GENERATE" | cat >"$WORK/lines.json"
file_secs=$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(date +%s.%N)" "$start")

read -r stored0 dropped0 < <(counts)
start=$(date +%s.%N)
"$BERTH" run --detach --app logbench -- "$GENERATE" >/dev/null
while :; do
    read -r stored dropped < <(counts)
    [ $((stored - stored0 + dropped - dropped0)) -ge "$LINES" ] && break
    sleep 0.05
done
berth_secs=$(python3 -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(date +%s.%N)" "$start")
stored=$((stored - stored0)); dropped=$((dropped - dropped0))

echo "ingest: $LINES JSON lines from an app"
awk -v n="$LINES" -v b="$berth_secs" -v f="$file_secs" -v s="$stored" -v d="$dropped" 'BEGIN {
    printf "  file (cat > file): %10.0f lines/s\n", n/f
    printf "  berth (stored):    %10.0f lines/s  (%d stored, %d dropped)\n", s/b, s, d
    printf "  berth/file: %.2fx (target >= 0.5); berth: %.0fk lines/s (target >= 100k)\n", (s/b)/(n/f), s/b/1000
}'

cat >"$WORK/query.py" <<'PY'
import json, statistics, subprocess, sys, time, urllib.parse, urllib.request
api, token, path, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
query = urllib.parse.urlencode({"where": "level>=warn user_id=42", "limit": 100})
def berth():
    request = urllib.request.Request(f"{api}/v1/apps/logbench/logs?{query}",
                                     headers={"Authorization": f"Bearer {token}"})
    start = time.perf_counter()
    lines = json.load(urllib.request.urlopen(request))
    return time.perf_counter() - start, len(lines)
def grep():
    start = time.perf_counter()
    out = subprocess.run(f"grep -F '\"user_id\":42,' {path} | grep -F '\"level\":\"WARN\"' | tail -n 100",
                         shell=True, capture_output=True, check=True).stdout
    return time.perf_counter() - start, len(out.splitlines())
for name, run in [("berth --where", berth), ("grep | grep | tail", grep)]:
    times, found = [], 0
    for _ in range(rounds):
        took, found = run()
        times.append(took)
    print(f"  {name:20} p50 {statistics.median(times)*1000:8.1f} ms  ({found} lines)")
PY
echo "query: level>=warn user_id=42, newest 100, over $LINES lines (p50 of $ROUNDS)"
python3 "$WORK/query.py" "$API_URL" "$TOKEN" "$WORK/lines.json" "$ROUNDS"
echo "  target: berth p50 < 100 ms"
