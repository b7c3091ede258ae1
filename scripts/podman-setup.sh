#!/usr/bin/env bash
# Prepare a machine without a Docker engine to run the compose files for real with Podman:
# install Podman, start its Docker-compatible API socket, and build the local base image from
# Debian packages (no image registry needed). Idempotent; used by `make test-compose`.
#
# Prints the DOCKER_HOST to export. Needs root (apt-get, the socket under /run).
set -euo pipefail

SOCK=${PODMAN_SOCK:-/run/podman/podman.sock}
BASE_IMAGE=${BASE_IMAGE:-localhost/base-python:bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}

log() { printf '[podman-setup] %s\n' "$*" >&2; }

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing podman, runc, debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi

if [ ! -f /etc/containers/containers.conf ] || ! grep -q 'runtime = "runc"' /etc/containers/containers.conf; then
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
fi

export DOCKER_HOST="unix://$SOCK"
if ! curl -fsS --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; then
  log "starting the podman API service on $SOCK"
  mkdir -p "$(dirname "$SOCK")"
  setsid podman system service --time=0 "unix://$SOCK" >/tmp/podman-service.log 2>&1 < /dev/null &
  for _ in $(seq 1 50); do
    curl -fsS --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS --unix-socket "$SOCK" http://d/_ping >/dev/null
fi

if ! podman image exists "$BASE_IMAGE"; then
  log "building $BASE_IMAGE from Debian $SUITE packages (about a minute)"
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$rootfs" >/tmp/debootstrap.log 2>&1
  tar -C "$rootfs" -c . | podman import - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi
echo "export DOCKER_HOST=$DOCKER_HOST"
