#!/usr/bin/env bash
# `berth up` to the first 200 of the new release, for each example, cold
# (nothing built, a new server) and warm (a one-line change to main.rs,
# built incrementally, the new release started and serving), against
# the same app built and started by hand (`cargo build --release`, then the
# binary with PORT set, until it answers). Both sides start from the same
# state: cold by hand builds into an empty target dir (with the host's
# cargo home, so crates are not downloaded; berth's sandboxed build has a
# cargo home per app and downloads them: the cold ratio includes that).
# Target: warm ≤ 1.2× by hand + 2 s.
# Knobs: EXAMPLES="plain hello".
source "$(dirname "$0")/lib.sh"
EXAMPLES=${EXAMPLES:-"plain hello"}
build_berth
start_server --build-cache "$WORK/build-cache"
router_port=${ROUTER_URL##*:}

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }
wait_200() { # PORT HOST
    for _ in $(seq 6000); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $2" "http://127.0.0.1:$1/" || true)
        [ "$code" = 200 ] && return 0
        sleep 0.02
    done
    echo "no 200 from $2 on $1" >&2
    return 1
}

by_hand() { # DIR TARGET_DIR: build, start on a free port, time to first 200
    local dir=$1 target=$2 started port pid
    started=$(now)
    (cd "$dir" && CARGO_TARGET_DIR="$target" cargo build --release -q)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    local binary
    binary=$(find "$target/release" -maxdepth 1 -type f -executable | head -1)
    PORT=$port "$binary" >/dev/null 2>&1 &
    pid=$!
    wait_200 "$port" localhost
    since "$started"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

with_berth() { # DIR APP
    local started
    started=$(now)
    (cd "$1" && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log" >&2; exit 1; }
    wait_200 "$router_port" "$2.localhost"
    since "$started"
}

printf '%-8s %-5s %10s %10s %8s\n' example cache berth by-hand ratio
for example in $EXAMPLES; do
    copy_example "$example" "$WORK/$example"
    app="bench-$example"
    printf 'app = "%s"\n' "$app" >"$WORK/$example/berth.toml"
    [ -f "$ROOT/examples/$example/berth.toml" ] && grep -v '^app' "$ROOT/examples/$example/berth.toml" >>"$WORK/$example/berth.toml"
    berth_cold=$(with_berth "$WORK/$example" "$app")
    hand_cold=$(by_hand "$WORK/$example" "$WORK/target-$example")
    echo "// warm $(date +%s%N)" >>"$WORK/$example/src/main.rs"
    berth_warm=$(with_berth "$WORK/$example" "$app")
    hand_warm=$(by_hand "$WORK/$example" "$WORK/target-$example")
    for row in "cold $berth_cold $hand_cold" "warm $berth_warm $hand_warm"; do
        set -- $row
        printf '%-8s %-5s %9ss %9ss %7s×\n' "$example" "$1" "$2" "$3" \
            "$(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$2" "$3")"
    done
done
