#!/usr/bin/env bash
# Build the controller and CPU function images from the unmodified Dockerfiles, then
# run each one as a restricted pod would run it and check that it works:
#   * the function image answers GET /healthz and classifies one image (POST /);
#   * the controller image answers GET /readyz (after `stoic model init`).
#
#   make images                        # or: docker/build-images.sh [--no-smoke]
#
# Why podman and a home-made base: these machines have no Docker engine and reach no
# container registry, but Debian's podman/buildah/runc build and run OCI images as
# root. The Dockerfiles start FROM python:3.11.14-slim-bookworm; this script makes a
# stand-in for that image with debootstrap (Debian bookworm, its Python 3.11.2, pip,
# the host's CA certificates) and imports it under the exact tag each Dockerfile names,
# so the FROM lines resolve locally (--pull=never). Everything else in the Dockerfiles
# runs as written, pip included: the build shares the host's network (--network host),
# so pip reaches the package index the host reaches (PyPI here, through the host's
# TLS-intercepting egress, whose CA the base image trusts); proxy variables set here
# (HTTP_PROXY, HTTPS_PROXY, NO_PROXY: Docker's predefined build args) are passed on.
# --format docker keeps the HEALTHCHECK instructions (the OCI format has none), as a
# Docker build would.
#
# The GPU image is not built: its base (tensorflow/tensorflow:2.21.0-gpu, Ubuntu with
# CUDA) can only come from Docker Hub, which cannot be reached, and cannot be made with
# debootstrap; see docs/deploy.md.
#
# Needs root (podman's rootful mode; apt-get installs podman, buildah, runc and
# debootstrap when missing). State lives in $STOIC_IMAGES_DIR (default .images/ in the
# repository, ignored by git): container storage, the cached base root file system,
# the smoke tests' scratch files. `rm -rf .images` forgets it all.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SCRATCH=${STOIC_IMAGES_DIR:-$ROOT/.images}
TAG=${STOIC_IMAGE_TAG:-0.1.0}
SMOKE=1
[ "${1:-}" = "--no-smoke" ] && SMOKE=0
IMAGES=(controller function-cpu)
UID_IN_IMAGE=10001 # the Dockerfiles' `useradd --uid 10001 stoic`
READY_LIMIT_S=${STOIC_IMAGES_READY_LIMIT_S:-300}

log() { printf '== [%s] %s\n' "$(date +%T)" "$*"; }
die() {
    printf 'build-images: %s\n' "$*" >&2
    exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --------------------------------------------------------------------- tools
[ "$(id -u)" = 0 ] || die "run as root: podman builds and runs these images in rootful mode"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null ||
    ! command -v debootstrap >/dev/null || ! command -v buildah >/dev/null; then
    log "installing podman buildah runc debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q podman buildah runc debootstrap >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q podman buildah runc debootstrap >/dev/null; }
fi
command -v curl >/dev/null || die "curl is needed for the smoke tests"

# --------------------------------------------------------------------- configuration
mkdir -p "$SCRATCH/storage" "$SCRATCH/run" "$SCRATCH/tmp"
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
[ "$nofile" -gt 1048576 ] && nofile=1048576
cat >"$SCRATCH/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$SCRATCH/storage"
runroot = "$SCRATCH/run"
EOF
# crun refuses this host's hybrid cgroups: runc with cgroupfs. Root cannot raise its
# hard file limit here, so containers get at most that.
cat >"$SCRATCH/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
# Short names (FROM python:...) resolve to docker.io, and the local image is found first.
cat >"$SCRATCH/registries.conf" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
export CONTAINERS_STORAGE_CONF="$SCRATCH/storage.conf"
export CONTAINERS_CONF="$SCRATCH/containers.conf"
export CONTAINERS_REGISTRIES_CONF="$SCRATCH/registries.conf"
export TMPDIR="$SCRATCH/tmp"

# --------------------------------------------------------------------- base image
# Every python:* tag the CPU Dockerfiles start from (today one: 3.11.14-slim-bookworm).
mapfile -t BASE_TAGS < <(
    for image in "${IMAGES[@]}"; do
        awk 'toupper($1) == "FROM" { print $2 }' "docker/Dockerfile.$image"
    done | sort -u
)
for base in "${BASE_TAGS[@]}"; do
    case "$base" in
    python:3.11*) ;;
    *) die "docker/Dockerfile.*: FROM $base: only a python:3.11 base can be made locally" ;;
    esac
done

make_rootfs() {
    local rootfs="$SCRATCH/rootfs" mirror
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    log "debootstrap bookworm from $mirror (about a minute)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$SCRATCH/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $SCRATCH/debootstrap.log"
    # The host's extra CAs (a TLS-intercepting proxy, a private mirror), so that pip in the
    # build trusts what the host trusts.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        TMPDIR=/tmp chroot "$rootfs" update-ca-certificates >/dev/null
    fi
    # Like the official image: pip may install into the system Python, `python` exists.
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    ln -sf python3 "$rootfs/usr/bin/python"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$SCRATCH/base-rootfs.tar.part" .
    mv "$SCRATCH/base-rootfs.tar.part" "$SCRATCH/base-rootfs.tar"
    rm -rf "$rootfs"
}

t_base=$(now)
for base in "${BASE_TAGS[@]}"; do
    ref="docker.io/library/$base"
    if ! podman image exists "$ref"; then
        [ -s "$SCRATCH/base-rootfs.tar" ] || make_rootfs
        log "importing the local stand-in base as $ref"
        podman import --quiet \
            --change 'CMD ["python3"]' \
            --change 'ENV LANG=C.UTF-8' \
            --message "local stand-in for $base: debootstrap bookworm (docker/build-images.sh)" \
            "$SCRATCH/base-rootfs.tar" "$ref" >/dev/null
    fi
done
log "base image ready in $(since "$t_base") s"

# --------------------------------------------------------------------- build
build_args=()
for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    [ -n "${!var:-}" ] && build_args+=(--build-arg "$var=${!var}")
done
for image in "${IMAGES[@]}"; do
    dockerfile="docker/Dockerfile.$image"
    ignore=()
    [ -f "$dockerfile.dockerignore" ] && ignore=(--ignorefile "$dockerfile.dockerignore")
    t=$(now)
    log "building localhost/stoic-$image:$TAG from $dockerfile"
    podman build --quiet --pull=never --network host --layers --format docker \
        "${build_args[@]}" "${ignore[@]}" \
        -f "$dockerfile" -t "localhost/stoic-$image:$TAG" . >"$SCRATCH/build-$image.log" 2>&1 ||
        { tail -40 "$SCRATCH/build-$image.log" >&2; die "podman build of $dockerfile failed"; }
    size=$(podman image inspect --format '{{.Size}}' "localhost/stoic-$image:$TAG")
    log "built stoic-$image in $(since "$t") s ($((size / 1000000)) MB)"
done
# Earlier builds' images, untagged by these: their layers would pile up in .images/.
podman image prune -f >/dev/null
[ "$SMOKE" = 1 ] || exit 0

# --------------------------------------------------------------------- smoke tests
# Run as the restricted securityContext of deploy/ runs the pods: the image's user,
# read-only root file system with a writable /tmp, no capabilities, no privilege gain.
RESTRICTED=(
    --user "$UID_IN_IMAGE:$UID_IN_IMAGE"
    --read-only --read-only-tmpfs=false --tmpfs /tmp:rw,size=1g,mode=1777
    --cap-drop ALL --security-opt no-new-privileges
)
CONTAINERS=()
cleanup() {
    for c in "${CONTAINERS[@]}"; do podman rm -f -t 0 -v "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL LIMIT_S NAME: poll until URL answers 2xx; fail with the container's log.
wait_http() {
    local url=$1 limit=$2 name=$3 t0
    t0=$(now)
    while ! curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        if [ "$(podman inspect --format '{{.State.Running}}' "$name")" != true ]; then
            podman logs "$name" 2>&1 | tail -30 >&2
            die "$name exited before $url answered"
        fi
        if awk -v t="$(since "$t0")" -v l="$limit" 'BEGIN { exit !(t > l) }'; then
            podman logs "$name" 2>&1 | tail -30 >&2
            die "$url did not answer within $limit s"
        fi
        sleep 1
    done
    log "$url answered after $(since "$t0") s"
}

run_id=$$
objects="$SCRATCH/smoke-$run_id/objects"
rm -rf "$SCRATCH/smoke-$run_id"
mkdir -p "$objects"
chown -R "$UID_IN_IMAGE:$UID_IN_IMAGE" "$SCRATCH/smoke-$run_id"

# 1. The function image: a (small) demo model and a package of one generated fox image,
#    made by the image's own code, then classified by its server.
fn="localhost/stoic-function-cpu:$TAG"
t=$(now)
podman run --rm --network none "${RESTRICTED[@]}" -v "$objects:/objects" "$fn" sh -c '
    stoic model init --store-dir /objects --app classify --version 1 --per-class 8 --epochs 1 &&
    python - <<EOF
import numpy as np
from stoic.function.classifier import draw_scene
from stoic.storage.package import PackageWriter, package_key
import io
buf = io.BytesIO()
draw_scene("fox", np.random.default_rng(7)).save(buf, format="JPEG")
import pathlib
path = pathlib.Path("/objects") / package_key("smoke")
path.parent.mkdir(parents=True)
with PackageWriter.open(path) as w:
    w.add_bytes("fox-0001.jpg", buf.getvalue())
EOF' >"$SCRATCH/smoke-$run_id/prepare.log" 2>&1 ||
    { cat "$SCRATCH/smoke-$run_id/prepare.log" >&2; die "preparing the model and package failed"; }
log "demo model and package made by the function image in $(since "$t") s"

port=$(free_port)
name="stoic-smoke-function-$run_id"
CONTAINERS+=("$name")
# (podman logs that it cannot reach systemd to schedule the image's HEALTHCHECK: there
# is no systemd here; the check itself is run once by hand below.)
podman run -d --name "$name" "${RESTRICTED[@]}" -p "127.0.0.1:$port:8080" \
    -e STOIC_OBJECTSTORE__PATH=/objects -v "$objects:/objects:ro" "$fn" \
    >/dev/null 2>>"$SCRATCH/smoke-$run_id/podman.log"
wait_http "http://127.0.0.1:$port/healthz" "$READY_LIMIT_S" "$name"
podman healthcheck run "$name" 2>>"$SCRATCH/smoke-$run_id/podman.log" ||
    die "the function image's HEALTHCHECK fails although /healthz answers"
log "the function image's own HEALTHCHECK passes"
answer=$(curl -fsS --max-time 120 -H 'Content-Type: application/json' \
    -d '{"action": "classify", "package": "batches/smoke/package.tar",
         "model": "models/classify/1/model.keras"}' "http://127.0.0.1:$port/") ||
    { podman logs "$name" 2>&1 | tail -30 >&2; die "POST / to the function failed"; }
printf '%s' "$answer" | python3 -c '
import json, sys
a = json.load(sys.stdin)
classes = {"bird", "fox", "rodent", "human", "empty"}
r = a["results"]
assert a["n_images"] == 1 and a["n_failed"] == 0 and len(r) == 1, a
assert r[0]["name"] == "fox-0001.jpg" and r[0]["label"] in classes, r
assert r[0]["error"] is None and set(r[0]["scores"]) == classes, r
print("== function classified %s as %r (%.2f); timings %s"
      % (r[0]["name"], r[0]["label"], r[0]["scores"][r[0]["label"]], a["timings"]))
' || die "the function's answer is wrong: $answer"
mem=$(podman stats --no-stream --format '{{.MemUsage}}' "$name" 2>/dev/null || echo unknown)
log "function container memory after one classification: $mem"
podman rm -f -t 0 "$name" >/dev/null 2>&1

# 2. The controller image, as its CMD runs it (stoic model init --if-missing, then serve).
port=$(free_port)
name="stoic-smoke-controller-$run_id"
CONTAINERS+=("$name")
mkdir -p "$SCRATCH/smoke-$run_id/data"
chown "$UID_IN_IMAGE:$UID_IN_IMAGE" "$SCRATCH/smoke-$run_id/data"
# Without a token it must refuse to listen on 0.0.0.0 (exit 2, one line), at once.
refused=$(podman run --rm "${RESTRICTED[@]}" "localhost/stoic-controller:$TAG" stoic serve 2>&1) &&
    die "the controller image served on 0.0.0.0 without api.token"
case "$refused" in
*"listens beyond loopback"*) log "without a token the controller refuses: ${refused##*$'\n'}" ;;
*) die "the controller image failed otherwise without a token: $refused" ;;
esac
podman run -d --name "$name" "${RESTRICTED[@]}" -p "127.0.0.1:$port:8000" \
    -e STOIC_API__TOKEN=smoke-test-token \
    -v "$SCRATCH/smoke-$run_id/data:/data" "localhost/stoic-controller:$TAG" >/dev/null
wait_http "http://127.0.0.1:$port/readyz" "$READY_LIMIT_S" "$name"
curl -fsS "http://127.0.0.1:$port/readyz"
echo
mem=$(podman stats --no-stream --format '{{.MemUsage}}' "$name" 2>/dev/null || echo unknown)
log "controller container memory when ready: $mem"
podman rm -f -t 0 "$name" >/dev/null 2>&1
rm -rf "$SCRATCH/smoke-$run_id"
log "images built and smoke-tested"
