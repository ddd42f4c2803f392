#!/usr/bin/env bash
# Local stand-ins for the public images docker-compose.yml uses, for machines that cannot reach
# Docker Hub (like CI): built from Debian packages on the debootstrap base of base-image.sh.
#   freshen-standin/python:bookworm    python3 + venv + git  (PYTHON_IMAGE)
#   freshen-standin/redis:bookworm     redis-server          (REDIS_IMAGE)
#   freshen-standin/registry:bookworm  docker-registry       (REGISTRY_IMAGE)
# Skips all work when they exist.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-127.0.0.1:5000/library/debian-python:bookworm}
all=(freshen-standin/python:bookworm freshen-standin/redis:bookworm freshen-standin/registry:bookworm)
if docker image inspect "${all[@]}" >/dev/null 2>&1; then
  echo "stand-in images: already built"
  exit 0
fi
bash scripts/base-image.sh "$base"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/Dockerfile" <<DOCKERFILE
FROM $base AS debian
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
      git wget redis-server docker-registry >/dev/null \\
 && rm -rf /var/lib/apt/lists/*

FROM debian AS python
CMD ["python3"]

FROM debian AS redis
WORKDIR /data
CMD ["redis-server"]

FROM debian AS registry
# registry:2's default configuration (Debian's turns on htpasswd auth).
RUN printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\nhttp:\n  addr: :5000\n' \
      >/etc/docker/registry/config.yml
ENTRYPOINT ["docker-registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
DOCKERFILE
for target in python redis registry; do
  DOCKER_BUILDKIT=0 docker build -q --network host --target "$target" \
    -t "freshen-standin/$target:bookworm" "$work" >/dev/null
done
echo "stand-in images: built ${all[*]}"
