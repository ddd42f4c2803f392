"""`docker-compose up` on the repository's own docker-compose.yml with no secret set: the whole
system runs on the logins it generated, Flower shows it, the CLI drives it, `down` + `up` keeps
its state and its logins, and a mistyped or known-default setting stops a service."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.compose.system import (
    ARTIFACTS,
    FLOWER_URL,
    METRICS_URL,
    NOTIFY_TOKEN,
    OLD_REDIS_PASSWORD,
    PORTS,
    Composed,
    composed_state,
    logins,
    registry_tag,
)
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1500)]


def test_every_service_is_healthy_and_a_run_promotes_the_tested_digest(
    composed: Composed, promoted: str
) -> None:
    state = composed_state(composed).load("awscli")
    run = next(iter(state.runs.values()))
    tags = [
        "latest",
        run.tool_version,
        ".".join(run.tool_version.split(".")[:2]),
        f"{run.tool_version}-{run.os_id}{run.os_version}",
    ]
    for tag in tags:
        assert registry_tag(tag) == promoted == run.digest, tag
    assert set(composed.health().values()) == {"healthy", "exited 0"}


def test_flower_needs_credentials_and_shows_all_queues(composed: Composed, promoted: str) -> None:
    for path in ("/", "/workers", "/tasks", "/api/workers", "/api/tasks"):
        assert requests.get(FLOWER_URL + path, timeout=10).status_code == 401, path
    login = logins(composed).flower
    workers = requests.get(f"{FLOWER_URL}/api/workers?refresh=1", auth=login, timeout=30).json()
    assert {name.split("@")[0] for name in workers} == {"check", "build", "test", "promote"}
    tasks = requests.get(f"{FLOWER_URL}/api/tasks", auth=login, timeout=30).json()
    run_id = next(iter(composed_state(composed).load("awscli").runs))
    names = {t["name"] for t in tasks.values() if run_id in str(t.get("args"))}
    assert names == {"workers.build.build", "workers.testing.verify", "workers.promote.promote"}


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium as this machine allows it (no background networking), one page."""
    return subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=8000",
            "--window-size=1280,900",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def flower_page(composed: Composed, path: str) -> str:
    user, password = logins(composed).flower
    return f"http://{user}:{password}@127.0.0.1:{PORTS['FLOWER_PORT']}{path}"


def test_chromium_shows_the_four_workers(composed: Composed, promoted: str, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = chromium(tmp_path / "profile", "--dump-dom", flower_page(composed, "/workers")).stdout
    for queue in ("check", "build", "test", "promote"):
        assert f"{queue}@" in page, queue
    shot = ARTIFACTS / "flower-workers.png"
    chromium(tmp_path / "profile", f"--screenshot={shot}", flower_page(composed, "/workers"))
    assert shot.stat().st_size > 10_000


def test_chromium_task_list_shows_each_tasks_image_and_run(
    composed: Composed, promoted: str, tmp_path: Path
) -> None:
    """A person finds a run's tasks in Flower's task list by its id, without opening each."""
    ARTIFACTS.mkdir(exist_ok=True)
    run_id = next(iter(composed_state(composed).load("awscli").runs))
    page = chromium(tmp_path / "profile", "--dump-dom", flower_page(composed, "/tasks")).stdout
    rows = [row for row in page.split("<tr")[1:] if "</td>" in row]
    shown = {
        name: row
        for name in ("workers.build.build", "workers.testing.verify", "workers.promote.promote")
        for row in rows
        if name in row and f"image=awscli run={run_id}" in row
    }
    assert set(shown) == {
        "workers.build.build",
        "workers.testing.verify",
        "workers.promote.promote",
    }, rows[:5]
    checks = [row for row in rows if "workers.check.check_images" in row]
    assert checks and all("images=awscli" in row for row in checks), checks[:3]
    shot = ARTIFACTS / "flower-tasks.png"
    chromium(tmp_path / "profile", f"--screenshot={shot}", flower_page(composed, "/tasks"))
    assert shot.stat().st_size > 10_000


def test_cli_status_inside_the_composed_system(composed: Composed, promoted: str) -> None:
    shown = composed.freshen("status", "awscli").stdout
    latest = next(line for line in shown.splitlines() if line.strip().startswith("latest"))
    assert promoted[:19] in latest
    as_json = json.loads(composed.freshen("status", "awscli", "--json").stdout)
    assert as_json["awscli"]["tags"]["latest"]["digest"] == promoted


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The metrics service's samples, parsed by prometheus-client: (name, labels) → value."""
    text = requests.get(METRICS_URL, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_show_the_promoted_run(composed: Composed, promoted: str) -> None:
    samples = scrape()
    info = {dict(k[1])["tag"]: dict(k[1]) for k in samples if k[0] == "freshen_tag_info"}
    assert info["latest"]["digest"] == promoted and info["latest"]["image"] == "awscli"
    assert samples[("freshen_runs", (("image", "awscli"), ("status", "done")))] >= 1
    finished = {
        dict(labels)["stage"]
        for (name, labels), count in samples.items()
        if name == "freshen_stage_duration_seconds_count" and count >= 1
    }
    assert finished == {"build", "test", "promote"}
    checked = samples[("freshen_last_successful_check_timestamp_seconds", (("image", "awscli"),))]
    assert checked > 0


def test_the_promotion_is_notified_once_with_its_tags_and_digest(
    composed: Composed, promoted: str, receiver: Receiver
) -> None:
    run = next(
        r for r in composed_state(composed).load("awscli").runs.values() if r.digest == promoted
    )
    title = f"freshen: awscli {run.tool_version} promoted"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        r.payload["title"] == title for r in receiver.got("hook/")
    ):
        time.sleep(0.5)
    time.sleep(2)  # a second copy would be here
    notified = [r for r in receiver.got("hook/") if r.payload["title"] == title]
    assert len(notified) == 1, receiver.got("hook/")
    text = notified[0].payload["message"]
    for expected in (
        f"digest: {promoted}",
        f"run: {run.run_id}",
        "tags moved:",
        "  latest: ",
        f"rebuild: freshen rebuild awscli --version {run.tool_version} --force",
    ):
        assert expected in text, (expected, text)
    logs = composed.compose("logs", "--no-color", "notify").stdout
    assert "delivered (Promoted)" in logs and NOTIFY_TOKEN not in logs


def test_down_and_up_keeps_log_state_and_secrets(composed: Composed, promoted: str) -> None:
    before = composed_state(composed).load("awscli")
    durations = {k: v for k, v in scrape().items() if k[0].startswith("freshen_stage_duration")}
    composed.compose("down")
    composed.compose("up", "-d")
    composed.wait_healthy()
    assert composed.logins() == composed.login  # generated on the first start only
    after = composed_state(composed).load("awscli")
    assert after.position >= before.position
    assert after.tags["latest"].digest == promoted
    assert registry_tag("latest") == promoted
    # Derived from the log: a new metrics process shows at least what the old one did.
    again = scrape()
    assert all(again.get(k, -1) >= v for k, v in durations.items()), durations


def test_a_mistyped_setting_stops_a_service_with_its_name(composed: Composed) -> None:
    # The check worker's image and command (compose v1's `run` refuses host networking).
    for setting, message in (
        ("FRESHEN_CHEK_INTERVAL_S=5", "unknown settings: FRESHEN_CHEK_INTERVAL_S"),
        ("FRESHEN_REGISTRY_PASSWORD=freshen", "FRESHEN_REGISTRY_PASSWORD: Value error, refused"),
    ):
        command = [
            "docker", "run", "--rm", "--network", "host", "-e", setting,
            "freshen:local", "celery", "-A", "workers.app", "worker", "-Q", "check",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert message in done.stdout + done.stderr


def test_redis_requires_its_password(composed: Composed) -> None:
    anonymous = redis.Redis(port=PORTS["REDIS_PORT"])
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    for password in ("not-the-password", OLD_REDIS_PASSWORD):
        wrong = redis.Redis(port=PORTS["REDIS_PORT"], password=password)
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
        wrong.close()
    right = redis.Redis(port=PORTS["REDIS_PORT"], password=logins(composed).redis)
    assert right.ping()
    right.close()
    assert logins(composed).redis not in composed.compose("top", "redis").stdout  # no argv
