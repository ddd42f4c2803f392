#!/usr/bin/env bash
# Build the local Debian + Python base image that tests (and air-gapped sites) use instead of
# Docker Hub, and push it to the local registry. Skips all work when the registry already has it.
#   usage: scripts/base-image.sh [IMAGE] [SUITE]
set -euo pipefail
image=${1:-127.0.0.1:5000/library/debian-python:bookworm}
suite=${2:-bookworm}
registry=${image%%/*}
rest=${image#*/}
repo=${rest%:*}
tag=${rest##*:}

# The registry's credentials (scripts/services.sh generates them); through stdin, never argv.
secrets=${FRESHEN_DEV_STATE:-/var/lib/freshen-dev}/registry.env
[ -r "$secrets" ] || { echo "base image: no $secrets; run scripts/services.sh first" >&2; exit 1; }
user=$(sed -n 's/^FRESHEN_REGISTRY_USERNAME=//p' "$secrets")
password=$(sed -n 's/^FRESHEN_REGISTRY_PASSWORD=//p' "$secrets")

if printf 'user = "%s:%s"\n' "$user" "$password" | curl -fsS -o /dev/null -K - \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$registry/v2/$repo/manifests/$tag"; then
  echo "base image $image: already in the registry"
  exit 0
fi
if ! docker image inspect "$image" >/dev/null 2>&1; then
  root=$(mktemp -d /var/tmp/freshen-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "base image $image: debootstrap $suite (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$root" http://deb.debian.org/debian >/var/tmp/freshen-debootstrap.log 2>&1 \
    || { tail -20 /var/tmp/freshen-debootstrap.log; exit 1; }
  # This machine reaches PyPI through a proxy with its own CA: builds on this base need it too.
  if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    cp "$PIP_CERT" "$root/etc/ssl/certs/ca-certificates.crt"
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$image" >/dev/null
fi
# A login of this push only: ~/.docker/config.json stays without credentials, so nothing that
# reads it (workers, tests, the SDK) inherits them.
DOCKER_CONFIG=$(mktemp -d /tmp/freshen-docker-config.XXXXXX)
export DOCKER_CONFIG
trap 'rm -rf "$DOCKER_CONFIG" ${root:+"$root"}' EXIT
printf '%s' "$password" | docker login -u "$user" --password-stdin "$registry" >/dev/null 2>&1
docker push "$image" >/dev/null
echo "base image $image: pushed"
