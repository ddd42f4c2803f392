#!/usr/bin/env bash
# Install (when missing) and start what freshen and its tests need on one Debian 12 machine, as
# root: the Docker Engine, an OCI registry on 127.0.0.1:5000 (with credentials) and its read-only
# anonymous view on 127.0.0.1:5001, Redis on 127.0.0.1:6379, the local Debian + Python base
# image, the moto image tests start a container of (in both engines), and the project's virtual environment in .venv. Idempotent:
# whatever already runs is left alone (except a registry on 5000 that does not demand the
# credentials in $state/registry.env: it is replaced).
set -euo pipefail
cd "$(dirname "$0")/.."
state=${FRESHEN_DEV_STATE:-/var/lib/freshen-dev}
mkdir -p "$state/redis" "$state/registry"
log() { printf '[services] %s\n' "$*"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$((limit * 4))"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  log "$what did not come up in ${limit}s"; return 1
}

packages=(docker.io docker-registry apache2-utils redis-server debootstrap git curl ca-certificates docker-compose chromium)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  # Default networking: builds use the bridge (egress to package indexes through NAT, no way to
  # the host's loopback services); each test gets an --internal network of its own (no egress).
  log "starting dockerd (default networking)"
  nohup dockerd >"$state/dockerd.log" 2>&1 &
  wait_for 60 dockerd docker info
fi

# A second, independent engine for the two-engine scale-out test (tests/faults/test_scaleout.py):
# its own socket, data root, exec root (and so its own containerd), pid file, config file and
# identity key. Its default bridge is its own (freshen2br: `--bridge=none` would delete the first
# engine's docker0) and it writes no iptables rules (the first engine owns them), so its
# containers have no egress. No --default-address-pool: with one set, a restart of this engine
# (its data root holds the last start's bridge network) deletes the interface named docker0,
# which is the first engine's bridge, and every build there fails ("could not find bridge
# docker0"). Its test networks are --internal with no host address, so sharing subnets with the
# first engine's routes nothing.
# It shares only the registry, which it reaches on 127.0.0.1 (insecure by default on loopback).
docker2=unix:///run/freshen-docker2.sock
if ! DOCKER_HOST=$docker2 docker info >/dev/null 2>&1; then
  log "starting a second dockerd on $docker2 (data root /var/lib/freshen-docker2)"
  mkdir -p /var/lib/freshen-docker2
  echo '{"deprecated-key-path": "/var/lib/freshen-docker2/key.json"}' >"$state/docker2.json"
  if ! ip link show freshen2br >/dev/null 2>&1; then
    ip link add freshen2br type bridge
    ip addr add 10.230.0.1/24 dev freshen2br
  fi
  ip link set freshen2br up
  nohup dockerd --host "$docker2" --data-root /var/lib/freshen-docker2 \
    --exec-root /run/freshen-docker2 --pidfile /run/freshen-docker2.pid \
    --config-file "$state/docker2.json" \
    --iptables=false --ip-forward=false --bridge=freshen2br >"$state/dockerd2.log" 2>&1 &
  wait_for 60 "second dockerd" env DOCKER_HOST=$docker2 docker info
fi

# The first engine's bridge must exist (an older services.sh's second engine could delete it):
# a running engine whose bridge is gone fails every build, so restart it.
bridge_if=$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null || true)
if [ -n "$bridge_if" ] && ! ip link show "$bridge_if" >/dev/null 2>&1; then
  log "the first engine's bridge $bridge_if is gone: restarting dockerd"
  kill "$(cat /var/run/docker.pid)"
  wait_for 60 "dockerd to stop" sh -c '! pgrep -x dockerd -F /var/run/docker.pid'
  nohup dockerd >"$state/dockerd.log" 2>&1 &
  wait_for 60 dockerd docker info
fi

# The registry, two processes on one storage root. 127.0.0.1:5000 needs credentials for every
# call (htpasswd, bcrypt): only the processes that push (build and promote workers,
# scripts/base-image.sh) hold them. 127.0.0.1:5001 is read-only and anonymous: pulls of release
# tags, and of candidates by digest by the test worker, which holds no credential (the Docker
# Engine cannot pull anonymously from a registry whose /v2/ answers with a Basic challenge).
# The credentials are generated on first start and kept in $state/registry.env (mode 600); put
# your own there to change them. Secrets go through stdin and files, never a command line.
secrets=$state/registry.env
if [ ! -s "$secrets" ]; then
  log "generating the registry credentials in $secrets"
  (umask 077 && printf 'FRESHEN_REGISTRY_USERNAME=freshen\nFRESHEN_REGISTRY_PASSWORD=%s\n' \
    "$(openssl rand -hex 32)" >"$secrets.new") && mv "$secrets.new" "$secrets"
fi
chmod 600 "$secrets"
registry_user=$(sed -n 's/^FRESHEN_REGISTRY_USERNAME=//p' "$secrets")
registry_password=$(sed -n 's/^FRESHEN_REGISTRY_PASSWORD=//p' "$secrets")
htpasswd_file=$state/registry.htpasswd
if ! printf '%s' "$registry_password" | htpasswd -v -i "$htpasswd_file" "$registry_user" >/dev/null 2>&1; then
  # bcrypt's default cost: the password is 256 random bits, and the registry checks it per call.
  printf '%s' "$registry_password" | (umask 077 && htpasswd -B -i -c "$htpasswd_file" "$registry_user") 2>/dev/null
fi
cat >"$state/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $state/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
auth:
  htpasswd:
    realm: freshen
    path: $htpasswd_file
YAML
cat >"$state/registry-readonly.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $state/registry
  maintenance:
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:5001
YAML
status() { curl -s -o /dev/null -w '%{http_code}' "$@" 2>/dev/null || true; }
authorized() {  # the credentials through curl's stdin config, not its command line
  printf 'user = "%s:%s"\n' "$registry_user" "$registry_password" | status -K - "$@"
}
stop_port() {  # stop the registry process listening on 127.0.0.1:PORT (never anything else)
  local pid
  for pid in $(ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = docker-registry ]; then
      kill "$pid"
      wait_for 10 "registry on :$1 to stop" sh -c "! kill -0 $pid"
    fi
  done
}
# An older services.sh started 5000 without auth (or with other credentials): replace it.
if [ "$(status http://127.0.0.1:5000/v2/)" != 401 ] \
    || [ "$(authorized http://127.0.0.1:5000/v2/)" != 200 ]; then
  stop_port 5000
  log "starting the registry on 127.0.0.1:5000 (credentials in $secrets)"
  nohup docker-registry serve "$state/registry.yml" >>"$state/registry.log" 2>&1 &
  wait_for 30 registry sh -c '[ "$(curl -s -o /dev/null -w "%{http_code}" http://127.0.0.1:5000/v2/)" = 401 ]'
fi
# REGISTRY_ANONYMOUS_PULLS=off: no anonymous endpoint (a running one is stopped).
if [ "${REGISTRY_ANONYMOUS_PULLS:-on}" = off ]; then
  stop_port 5001
elif [ "$(status http://127.0.0.1:5001/v2/)" != 200 ] \
    || [ "$(status -X POST http://127.0.0.1:5001/v2/freshen/probe/blobs/uploads/)" != 405 ]; then
  stop_port 5001
  log "starting the read-only anonymous registry on 127.0.0.1:5001"
  nohup docker-registry serve "$state/registry-readonly.yml" >>"$state/registry-readonly.log" 2>&1 &
  wait_for 30 "read-only registry" curl -fsS http://127.0.0.1:5001/v2/
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis on 127.0.0.1:6379 (durability from deploy/redis.conf)"
  redis-server "$PWD/deploy/redis.conf" --bind 127.0.0.1 --port 6379 \
    --dir "$state/redis" --daemonize yes --logfile "$state/redis.log"
  wait_for 30 redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

stamp=.venv/.freshen-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing the project into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q -e '.[test]'
  echo "$want" >"$stamp"
fi

bash scripts/base-image.sh

# No moto server on the host: each test gets a moto container of its own on an internal network
# of its own (shared/adapters/testenv.py), from this image (FRESHEN_MOTO_IMAGE), in every engine that
# tests. Built on the local base (read anonymously; it carries the pip proxy's CA, see
# base-image.sh) over the default bridge, copied into the second engine (whose bridge has no
# egress).
moto_image=freshen-moto:local
if ! docker image inspect "$moto_image" >/dev/null 2>&1; then
  log "building $moto_image from deploy/moto.Dockerfile"
  docker build -q -t "$moto_image" -f deploy/moto.Dockerfile \
    --build-arg PYTHON_IMAGE=127.0.0.1:5001/library/debian-python:bookworm deploy >/dev/null
fi
if ! DOCKER_HOST=$docker2 docker image inspect "$moto_image" >/dev/null 2>&1; then
  log "copying $moto_image into the second engine"
  docker save "$moto_image" | DOCKER_HOST=$docker2 docker load -q >/dev/null
fi
log "ready: docker (and $docker2), registry 127.0.0.1:5000 (5001 read-only), redis 127.0.0.1:6379, $moto_image"
