#!/usr/bin/env bash
# Redeploy latency: `berth deploy` of a one-line change until the new response
# is served, against a bare incremental `cargo build --release` of the same
# change, in the same run. Target: berth <= 1.3x cargo + 1 s.
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}
build_berth
start_server
copy_example hello "$WORK/app"
copy_example hello "$WORK/bare"
echo "==> first deploy and first bare build (cold caches, not measured)" >&2
(cd "$WORK/app" && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
(cd "$WORK/bare" && CARGO_TARGET_DIR="$WORK/bare-target" cargo build --release -q)
HOST="hello.localhost"
now() { date +%s.%N; }
for round in $(seq "$ROUNDS"); do
    sed -i "s/Hello from berth![^\"]*\"/Hello from berth! round $round\"/" "$WORK/app/src/main.rs" "$WORK/bare/src/main.rs"
    start=$(now)
    (cd "$WORK/app" && "$BERTH" deploy >/dev/null 2>"$WORK/deploy.log") || { cat "$WORK/deploy.log"; exit 1; }
    until curl -sf -H "Host: $HOST" "$ROUTER_URL/" | grep -q "round $round"; do sleep 0.01; done
    berth_s=$(echo "$(now) - $start" | bc)
    start=$(now)
    (cd "$WORK/bare" && CARGO_TARGET_DIR="$WORK/bare-target" nice -n 15 cargo build --release -q)
    cargo_s=$(echo "$(now) - $start" | bc)
    echo "round $round: berth deploy to new response ${berth_s}s, bare cargo build ${cargo_s}s" >&2
    echo "$berth_s" >>"$WORK/berth.times"; echo "$cargo_s" >>"$WORK/cargo.times"
done
b=$(median <"$WORK/berth.times"); c=$(median <"$WORK/cargo.times")
awk -v b="$b" -v c="$c" 'BEGIN {
    printf "median berth redeploy %.2fs, bare incremental cargo build %.2fs\n", b, c
    printf "berth / cargo: %.2fx; berth - cargo: %.2fs (target: berth <= 1.3 x cargo + 1 s = %.2fs)\n", b/c, b-c, 1.3*c+1
}'
