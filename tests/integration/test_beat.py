"""Celery beat, as a real process: it emits a batch check task per interval on the check queue,
naming the batch's images."""

from __future__ import annotations

import base64
import json
import os
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


@pytest.mark.timeout(90)
def test_beat_emits_batch_checks_of_the_images_on_the_check_queue(tmp_path: Path) -> None:
    client = redis.Redis.from_url(BEAT_REDIS)
    client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHEN_")}
    env.update(
        FRESHEN_REDIS_URL=BEAT_REDIS,
        FRESHEN_IMAGES_DIR=str(ROOT / "images"),
        FRESHEN_CHECK_INTERVAL_S="1",
    )
    with (tmp_path / "beat.log").open("wb") as log:
        beat = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "beat",
                "-s",
                str(tmp_path / "schedule"),
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
