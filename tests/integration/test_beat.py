"""Celery beat, as a real process: it emits a batch check task per interval on the check queue,
naming the batch's images."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
BEAT_REDIS = "redis://127.0.0.1:6379/10"  # no workers listen here: messages stay queued


def checks(client: redis.Redis) -> list[dict[str, Any]]:
    """The check tasks queued on the check queue (it also carries the reconcile task)."""
    messages = [json.loads(m) for m in client.lrange("check", 0, -1)]
    return [m for m in messages if m["headers"]["task"] == "workers.check.check_images"]


def start_beat(tmp_path: Path, images: Path, interval_s: float, batch_size: int = 50) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_")}
    env.update(
        FRESHEN_REDIS_URL=BEAT_REDIS,
        FRESHEN_IMAGES_DIR=str(images),
        FRESHEN_CHECK_INTERVAL_S=str(interval_s),
        FRESHEN_CHECK_BATCH_SIZE=str(batch_size),
    )
    command = [sys.executable, "-m", "celery", "-A", "workers.app", "beat"]
    command += ["-s", str(tmp_path / "schedule"), "-l", "INFO"]
    with (tmp_path / "beat.log").open("wb") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_log(tmp_path: Path, text: str, count: int = 1, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (tmp_path / "beat.log").read_text().count(text) < count:
        assert time.monotonic() < deadline, (tmp_path / "beat.log").read_text()[-2000:]
        time.sleep(0.2)


def sent_batches(client: redis.Redis) -> list[list[str]]:
    return [json.loads(base64.b64decode(m["body"]))[0][0] for m in checks(client)]


@pytest.mark.timeout(90)
def test_beat_emits_batch_checks_of_the_images_on_the_check_queue(tmp_path: Path) -> None:
    client = redis.Redis.from_url(BEAT_REDIS)
    client.flushdb()
    beat = start_beat(tmp_path, ROOT / "images", interval_s=1)
    try:
        deadline = time.monotonic() + 60
        while len(checks(client)) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        beat.terminate()
        beat.wait(timeout=30)
    messages = checks(client)
    assert len(messages) >= 3, (tmp_path / "beat.log").read_text()[-2000:]
    for message in messages:
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        assert args == [["awscli"]]
        assert message["headers"]["argsrepr"] == "images=awscli (1)"  # Flower's Args column
    client.flushdb()
    client.close()


@pytest.mark.timeout(90)
def test_a_batch_with_a_new_image_folder_is_checked_at_once_the_others_keep_their_time(
    tmp_path: Path,
) -> None:
    client = redis.Redis.from_url(BEAT_REDIS)
    client.flushdb()
    images = tmp_path / "images"
    for name in ("a", "b", "c"):
        (images / name).mkdir(parents=True)
        (images / name / "image.toml").write_text("")  # beat reads names only
    beat = start_beat(tmp_path, images, interval_s=3600, batch_size=2)
    try:
        wait_for_log(tmp_path, "3 image folders in 2 check batches")
        (images / "bb").mkdir()
        (images / "bb" / "image.toml").write_text("")
        wait_for_log(tmp_path, "4 image folders in 2 check batches")
        wait_for_log(tmp_path, "Sending due task check-2")
        shutil.rmtree(images / "a")  # batches change again, with no new image: none is due
        wait_for_log(tmp_path, "3 image folders in 2 check batches", count=2)
        time.sleep(1)  # a message beat sent at that scan reaches Redis meanwhile
    finally:
        beat.terminate()
        beat.wait(timeout=30)
    assert sent_batches(client) == [["bb", "c"]], (tmp_path / "beat.log").read_text()[-2000:]
    client.flushdb()
    client.close()
