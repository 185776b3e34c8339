#!/usr/bin/env bash
# A one-line change deployed through the guide's cargo-chef Dockerfile,
# until the new release serves: `berth deploy` (berth's native build —
# cargo with its persistent target dir, the binary put on the runtime
# base — and the rollout) against the same Dockerfile built by buildah
# with its layer cache (`--layers`: the `cargo chef cook` step is cached,
# as docker's would be), pushed to berth's registry and deployed with
# `berth deploy --image`, the way a user without berth's builder would.
# examples/hello, ROUNDS changes each, after one warm-up each; prints the
# medians and berth / buildah (target: <= 0.5).
#
# The base images are made here once and cached in $BENCH_CACHE (default
# /var/cache/berth-bench): `debian:bookworm-slim` is a debootstrap
# minbase; `lukemathwalker/cargo-chef:latest-rust-1` is the same with gcc
# and libc6-dev, this machine's stable Rust toolchain and cargo-chef
# (`cargo install cargo-chef`). That needs Debian's mirror and crates.io
# the first time, and crates.io for the builds (as any cargo build). Needs
# root, buildah, runc, umoci, skopeo and debootstrap.
source "$(dirname "$0")/lib.sh"
for tool in buildah runc umoci skopeo debootstrap; do
    command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
ROUNDS=${ROUNDS:-3}
CACHE=${BENCH_CACHE:-/var/cache/berth-bench}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$CACHE"

# --- the base images, once ---------------------------------------------
if [ ! -f "$CACHE/slim.done" ]; then
    echo "==> debootstrap: debian:bookworm-slim (once)" >&2
    rm -rf "$CACHE/slim"
    debootstrap --variant=minbase bookworm "$CACHE/slim" "$MIRROR" >"$CACHE/slim.log" 2>&1
    touch "$CACHE/slim.done"
fi
if [ ! -f "$CACHE/rust.done" ]; then
    echo "==> debootstrap + toolchain + cargo-chef: the cargo-chef image (once)" >&2
    if [ ! -x "$CACHE/rust/usr/bin/gcc" ]; then
        rm -rf "$CACHE/rust"
        debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates,pkg-config \
            bookworm "$CACHE/rust" "$MIRROR" >"$CACHE/rust.log" 2>&1
    fi
    [ -x "$CACHE/chef/bin/cargo-chef" ] || cargo install --quiet --locked cargo-chef --root "$CACHE/chef"
    mkdir -p "$CACHE/rust/usr/local/rust"
    cp -a "$(rustc --print sysroot)/." "$CACHE/rust/usr/local/rust/"
    for tool in cargo rustc rustdoc; do
        ln -sf "/usr/local/rust/bin/$tool" "$CACHE/rust/usr/local/bin/$tool"
    done
    cp "$CACHE/chef/bin/cargo-chef" "$CACHE/rust/usr/local/bin/"
    # The CAs this machine trusts (a TLS-inspecting proxy's among them,
    # where there is one), so the builds reach crates.io as cargo here does.
    cp /etc/ssl/certs/ca-certificates.crt "$CACHE/rust/etc/ssl/certs/ca-certificates.crt"
    touch "$CACHE/rust.done"
fi
if [ ! -f "$CACHE/layout.done" ]; then
    echo "==> the OCI images (once)" >&2
    rm -rf "$CACHE/layout"
    umoci init --layout "$CACHE/layout" >/dev/null
    umoci new --image "$CACHE/layout:slim" >/dev/null
    umoci insert --image "$CACHE/layout:slim" "$CACHE/slim" / >/dev/null
    umoci new --image "$CACHE/layout:rust" >/dev/null
    umoci insert --image "$CACHE/layout:rust" "$CACHE/rust" / >/dev/null
    umoci config --image "$CACHE/layout:rust" --config.env "PATH=/usr/local/bin:/usr/bin:/bin" \
        --config.env "CARGO_HOME=/usr/local/cargo" >/dev/null
    touch "$CACHE/layout.done"
fi

# --- the app: examples/hello with the guide's Dockerfile ----------------
APP="$WORK/app"
copy_example hello "$APP"
cat >"$APP/Dockerfile" <<'DOCKERFILE'
FROM lukemathwalker/cargo-chef:latest-rust-1 AS chef
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --bin hello

FROM debian:bookworm-slim AS runtime
WORKDIR /app
COPY --from=builder /app/target/release/hello /usr/local/bin
ENTRYPOINT ["/usr/local/bin/hello"]
DOCKERFILE
printf 'app = "hello"\n[build]\ndockerfile = "Dockerfile"\n' >"$APP/berth.toml"
change() { # ROUND: a one-line change to the app's source
    sed -i "s|^// bench round .*||" "$APP/src/main.rs"
    echo "// bench round $1 $(date +%s%N)" >>"$APP/src/main.rs"
}
seconds() { # COMMAND…: wall seconds it took
    local start end
    start=$(date +%s.%N); "$@" >"$WORK/last.out" 2>&1 || { tail -30 "$WORK/last.out" >&2; exit 1; }
    end=$(date +%s.%N); python3 -c "print(f'{$end - $start:.2f}')"
}
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.2f}")' "$@"; }

# --- one server for both ------------------------------------------------
build_berth
start_server
API=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_url"])' "$BERTH_DATA/server.json")
REGISTRY=${API#http://}
TOKEN=$(cat "$BERTH_DATA/token")
for pair in "slim debian:bookworm-slim" "rust lukemathwalker/cargo-chef:latest-rust-1"; do
    set -- $pair
    skopeo copy -q --dest-creds "x:$TOKEN" --dest-tls-verify=false \
        "oci:$CACHE/layout:$1" "docker://$REGISTRY/$2" >/dev/null
done

# --- berth: `berth deploy` builds it natively ----------------------------
echo "==> berth: warm-up deploy" >&2
(cd "$APP" && seconds "$BERTH" deploy) >/dev/null
native=()
for round in $(seq "$ROUNDS"); do
    change "$round"
    native+=("$(cd "$APP" && seconds "$BERTH" deploy)")
    echo "    berth round $round: ${native[-1]} s" >&2
done
curl -sf -H 'Host: hello.localhost' "$ROUTER_URL/" | grep -q . || { echo "hello does not answer" >&2; exit 1; }

# --- buildah: build with its layer cache, push, deploy the image ----------
STORE="$WORK/buildah"
BUILDAH=(buildah --root "$STORE/storage" --runroot "$STORE/run" --storage-driver overlay)
for pair in "slim debian:bookworm-slim" "rust lukemathwalker/cargo-chef:latest-rust-1"; do
    set -- $pair
    id=$("${BUILDAH[@]}" pull --quiet "oci:$CACHE/layout:$1")
    "${BUILDAH[@]}" tag "$id" "$2"
done
buildah_deploy() { # TAG: build, push to berth's registry, deploy as app hello-buildah
    "${BUILDAH[@]}" bud --runtime "$(command -v runc)" --pull=never --layers \
        --network host -t "hello:$1" "$APP" &&
        "${BUILDAH[@]}" push --creds "x:$TOKEN" --tls-verify=false \
            "hello:$1" "docker://$REGISTRY/hello-buildah:$1" &&
        "$BERTH" deploy --image "hello-buildah:$1" --app hello-buildah
}
echo "==> buildah: warm-up build, push and deploy" >&2
seconds buildah_deploy warm >/dev/null
reference=()
for round in $(seq "$ROUNDS"); do
    change "b$round"
    reference+=("$(seconds buildah_deploy "r$round")")
    echo "    buildah round $round: ${reference[-1]} s" >&2
done
curl -sf -H 'Host: hello-buildah.localhost' "$ROUTER_URL/" | grep -q . || { echo "hello-buildah does not answer" >&2; exit 1; }
stop_server

berth_median=$(median "${native[@]}")
buildah_median=$(median "${reference[@]}")
echo "one-line change, cargo-chef Dockerfile, to serving: berth ${berth_median} s, buildah --layers + push + deploy ${buildah_median} s"
python3 -c "print(f'berth / buildah = {$berth_median / $buildah_median:.2f} (target <= 0.5)')"
