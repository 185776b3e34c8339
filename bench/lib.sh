# Shared helpers for the benchmarks: build berth (release), start a server in a
# temp dir on free loopback ports, read what it wrote, stop it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BERTH="$ROOT/target/release/berth"
WORK="$(mktemp -d /tmp/berth-bench.XXXXXX)"
export BERTH_DATA="$WORK/data"
SERVER_PID=""

cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
    # Whatever is still mounted in it (a server stopped hard, buildah).
    for mount in $(grep -o " $WORK[^ ]*" /proc/mounts | sort -r); do umount -l "$mount"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

build_berth() {
    echo "==> building berth (release)" >&2
    (cd "$ROOT" && cargo build --release -q -p berth)
}

start_server() {
    "$BERTH" server --api 127.0.0.1:0 --router 127.0.0.1:0 "$@" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 200); do
        [ -f "$BERTH_DATA/server.json" ] && break
        sleep 0.05
    done
    ROUTER_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["router_url"])' "$BERTH_DATA/server.json")
}

stop_server() {
    kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

copy_example() { # NAME DEST
    mkdir -p "$2" && (cd "$ROOT/examples/$1" && tar --exclude=./target -cf - .) | (cd "$2" && tar xf -)
}

json_field() { # JSON-PATH (python expression on `d`) reading stdin
    python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"
}

rss_kib() { # PID
    awk '/^VmRSS/ {print $2}' "/proc/$1/status"
}

pss_kib() { # PID: its proportional share of the memory it shares with others
    awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"
}

berth_pids() { # the server, its spawner and the spawner's standby (as root)
    echo "$SERVER_PID"
    pgrep -P "$SERVER_PID" -x berth-spawner || true
    # The standby: a berth-standby whose grandparent is the server's child.
    for standby in $(pgrep -x berth-standby || true); do
        init=$(ps -o ppid= -p "$standby" | tr -d ' ')
        wait=$(ps -o ppid= -p "$init" | tr -d ' ')
        if [ "$(ps -o ppid= -p "$wait" | tr -d ' ')" = "$SERVER_PID" ]; then
            echo "$wait $init $standby"
        fi
    done
}

berth_rss_kib() { # RSS of berth's own processes (see berth_pids), in KiB
    local total=0
    for pid in $(berth_pids); do total=$((total + $(rss_kib "$pid"))); done
    echo "$total"
}

berth_pss_kib() { # the same by PSS: pages the forks share with the spawner count once
    local total=0
    for pid in $(berth_pids); do total=$((total + $(pss_kib "$pid"))); done
    echo "$total"
}

wrk_row() { # NAME WRK-OUTPUT: prints NAME, requests/s, p99 and errors; sets NAME_rps and NAME_p99
    local name=$1 out=$2 rps p99 errors
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    printf '%-16s %12s %10s %s\n' "$name" "$rps" "$p99" "$errors"
    eval "${name//-/_}_rps=$rps; ${name//-/_}_p99=$p99"
}

to_ms() { # a wrk latency (900us, 1.2ms, 2s) in milliseconds
    awk -v v="$1" 'BEGIN { if (v ~ /us$/) print substr(v,1,length(v)-2)/1000; else if (v ~ /ms$/) print substr(v,1,length(v)-2); else if (v ~ /s$/) print substr(v,1,length(v)-1)*1000; else print v }'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
