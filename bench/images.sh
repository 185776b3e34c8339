#!/usr/bin/env bash
# Images: berth's registry against the reference one, and an image's cold
# start against the same binary's from source.
#
# Registry: a 100 MiB image (one layer of random bytes, made by umoci) is
# pushed and pulled back with skopeo, ROUNDS times alternating, through
# berth's registry and through Debian's docker-registry (the reference
# distribution server) started here on loopback. Prints the medians and
# the ratio reference time / berth time (target: >= 1.0 both ways).
#
# Cold start: examples/hello from source, scaled to zero, against the same
# release as an image (`berth image build`, then `berth deploy --image`),
# scaled to zero too: a request's time to its response, p50 of ROUNDS each
# (target: image <= 1.2x source). Needs root (an image runs in a root of
# its own).
source "$(dirname "$0")/lib.sh"
for tool in skopeo umoci docker-registry; do
    command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install -y ${tool/docker-registry/docker-registry}" >&2; exit 1; }
done
ROUNDS=${ROUNDS:-5}
COLD_ROUNDS=${COLD_ROUNDS:-11}
build_berth
start_server --registry-grace 1h
API=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_url"])' "$BERTH_DATA/server.json")
BERTH_HOST=${API#http://}
TOKEN=$(cat "$BERTH_DATA/token")

# The images: one per round, each a layer of fresh random bytes, so no
# push can reuse a blob (skopeo remembers where it saw blobs, as root in
# /var/lib/containers/cache, and mounts them instead of sending them).
umoci init --layout "$WORK/layout" >/dev/null
for round in $(seq "$ROUNDS"); do
    head -c $((100 * 1024 * 1024)) /dev/urandom >"$WORK/noise.bin"
    umoci new --image "$WORK/layout:r$round" >/dev/null
    umoci insert --image "$WORK/layout:r$round" "$WORK/noise.bin" /noise.bin >/dev/null
done

# The reference registry.
ref_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $WORK/reference
http:
  addr: 127.0.0.1:$ref_port
log:
  level: error
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/reference.log" 2>&1 &
REF_PID=$!
trap 'kill $REF_PID 2>/dev/null; cleanup' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ref_port/v2/" >/dev/null && break; sleep 0.1; done

seconds() { # COMMAND…: wall seconds it took
    local start end
    start=$(date +%s.%N); "$@" >/dev/null 2>"$WORK/last.err" || { cat "$WORK/last.err" >&2; exit 1; }
    end=$(date +%s.%N); python3 -c "print(f'{$end - $start:.3f}')"
}
copy() { # SOURCE DEST [FLAGS…]
    local home
    home=$(mktemp -d "$WORK/home.XXXXXX")
    seconds env HOME="$home" skopeo copy "${@:3}" "$1" "$2"
}
echo "registry: 100 MiB image, skopeo, $ROUNDS rounds each, alternating"
b_push=(); r_push=(); b_pull=(); r_pull=()
for round in $(seq "$ROUNDS"); do
    b_push+=("$(copy "oci:$WORK/layout:r$round" "docker://$BERTH_HOST/big$round:v1" --dest-creds "x:$TOKEN" --dest-tls-verify=false)")
    r_push+=("$(copy "oci:$WORK/layout:r$round" "docker://127.0.0.1:$ref_port/big$round:v1" --dest-tls-verify=false)")
    rm -rf "$WORK/pulled"
    b_pull+=("$(copy "docker://$BERTH_HOST/big$round:v1" "oci:$WORK/pulled:v1" --src-creds "x:$TOKEN" --src-tls-verify=false)")
    rm -rf "$WORK/pulled"
    r_pull+=("$(copy "docker://127.0.0.1:$ref_port/big$round:v1" "oci:$WORK/pulled:v1" --src-tls-verify=false)")
done
python3 - "${b_push[*]}" "${r_push[*]}" "${b_pull[*]}" "${r_pull[*]}" <<'PY'
import statistics, sys
b_push, r_push, b_pull, r_pull = ([float(x) for x in arg.split()] for arg in sys.argv[1:])
for what, berth, ref in (("push", b_push, r_push), ("pull", b_pull, r_pull)):
    b, r = statistics.median(berth), statistics.median(ref)
    print(f"  {what}: berth {b:.2f} s ({100 / b:.0f} MiB/s), docker-registry {r:.2f} s ({100 / r:.0f} MiB/s): ratio {r / b:.2f}x (target >= 1.0)")
PY

if [ "$(id -u)" != 0 ]; then
    echo "cold start: skipped (needs root: an image runs in a root of its own)"
    exit 0
fi
copy_example hello "$WORK/hello"
cat >"$WORK/scale.toml" <<'TOML'
[http_service]
auto_stop_machines = true
min_machines_running = 0
idle_timeout = "1s"
TOML
(cd "$WORK/hello" && { echo 'app = "hello"'; cat "$WORK/scale.toml"; } >berth.toml && "$BERTH" up >/dev/null 2>"$WORK/up.log") || { cat "$WORK/up.log"; exit 1; }
"$BERTH" image build --app hello >/dev/null
mkdir -p "$WORK/imaged"
{ echo 'app = "imaged"'; cat "$WORK/scale.toml"; } >"$WORK/imaged/berth.toml"
(cd "$WORK/imaged" && "$BERTH" deploy --image hello:v1 >/dev/null 2>"$WORK/image.log") || { cat "$WORK/image.log"; exit 1; }
router_port=${ROUTER_URL##*:}
cold() { # APP: ms from a request to its response, from zero instances
    for _ in $(seq 400); do
        n=$("$BERTH" status --app "$1" --json | json_field 'len(d["instances"])')
        [ "$n" = 0 ] && break
        sleep 0.05
    done
    sleep 0.3
    python3 - "$router_port" "$1.localhost" <<'PY'
import socket, sys, time
port, host = int(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
s = socket.create_connection(("127.0.0.1", port), timeout=30)
s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
data = b""
while b"\r\n" not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
if data[9:12] != b"200":
    sys.exit(f"cold request answered {data[:40]!r}")
print(f"{(time.perf_counter() - start) * 1000:.2f}")
PY
}
source_ms=(); image_ms=()
for _ in $(seq "$COLD_ROUNDS"); do
    source_ms+=("$(cold hello)")
    image_ms+=("$(cold imaged)")
done
python3 - "${source_ms[*]}" "${image_ms[*]}" <<'PY'
import statistics, sys
source, image = ([float(x) for x in arg.split()] for arg in sys.argv[1:])
s, i = statistics.median(source), statistics.median(image)
print(f"cold start (p50 of {len(source)}): source {s:.1f} ms, image {i:.1f} ms: {i / s:.2f}x (target <= 1.2)")
PY
