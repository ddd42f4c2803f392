"""Redis runs with one configuration everywhere: deploy/redis.conf, read by docker-compose.yml,
scripts/services.sh, the fault suite's throw-away servers and the benchmarks'. Each place adds
only where Redis listens and keeps its files; none overrides a line of the file."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from bench.redis_server import ThrowawayRedis
from tests.support.throwaway import RedisServer

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "redis.conf"
# What a command line may set: it differs per place and is not about durability.
PLACEMENT = {"bind", "port", "dir", "daemonize", "logfile"}
# The durability the event log relies on (RELIABILITY.md, "Durability as shipped").
SHIPPED = {
    "appendonly": "yes",
    "appendfsync": "always",
    "no-appendfsync-on-rewrite": "no",
    "save": '""',
    "maxmemory-policy": "noeviction",
}


def directives() -> dict[str, str]:
    lines = CONF.read_text().splitlines()
    found: dict[str, str] = {}
    for number, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        assert name not in found, f"{name} twice in {CONF.name}"
        assert lines[number - 1].startswith("# "), f"{name}: say why on the line above"
        found[name] = value.strip()
    return found


def overridden(arguments: list[str]) -> set[str]:
    """Names of the settings a redis-server command line gives beyond the config file."""
    names = {a[2:] for a in arguments if a.startswith("--")}
    return (names - PLACEMENT) | (names & set(directives()))


def test_the_file_ships_the_durability_the_event_log_needs() -> None:
    found = directives()
    assert {k: found.get(k) for k in SHIPPED} == SHIPPED


def test_compose_mounts_the_file_and_overrides_nothing() -> None:
    redis = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]
    assert "./deploy/redis.conf:/etc/freshen/redis.conf:ro" in redis["volumes"]
    shell = redis["command"][-1]
    server, dash, stdin = shell.partition(" - <")
    assert dash, "the password comes on stdin"
    arguments = shlex.split(server.removeprefix("exec redis-server "))
    assert arguments[0] == "/etc/freshen/redis.conf"
    assert not overridden(arguments[1:])
    # What stdin adds is the password only: the one `requirepass` line the secrets service
    # writes (tests/unit/test_firststart.py).
    assert stdin == "/run/freshen/secrets/requirepass.conf"


def test_services_script_starts_redis_from_the_file_and_overrides_nothing() -> None:
    script = (ROOT / "scripts" / "services.sh").read_text().replace("\\\n", " ")
    starts = [
        line.split() for line in script.splitlines() if line.strip().startswith("redis-server")
    ]
    assert len(starts) == 1, starts
    arguments = starts[0][1:]
    assert arguments[0] == '"$PWD/deploy/redis.conf"'
    assert not overridden(arguments[1:])


def test_fault_suite_and_benchmark_servers_start_from_the_file(tmp_path: Path) -> None:
    for command in (RedisServer(tmp_path).command(), ThrowawayRedis(tmp_path).command()):
        assert command[:2] == ["redis-server", str(CONF)]
        assert not overridden(command[2:]), command
