"""The Celery app as it should be run: every task declares limits and retries, routes by queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from beat.schedule import AUDIT_TASK, CHECK_BATCH_TASK, RECONCILE_TASK, beat_schedule
from shared import sends
from shared.definitions import load_definitions
from shared.errors import TransientError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FRESHEN_IMAGES_DIR", str(ROOT / "images"))
    from workers.app import app

    app.loader.import_default_modules()
    return app


def test_every_task_declares_limits_and_retry_policy(app) -> None:  # type: ignore[no-untyped-def]
    tasks = {name: t for name, t in app.tasks.items() if name.startswith("workers.")}
    assert set(tasks) == {
        "workers.check.check_image",
        "workers.check.check_images",
        "workers.check.reconcile",
        "workers.check.audit",
        "workers.build.build",
        "workers.testing.verify",
        "workers.promote.promote",
        "workers.promote.cleanup",
    }
    for name, task in tasks.items():
        assert task.time_limit and task.soft_time_limit, name
        assert task.soft_time_limit < task.time_limit, name
        assert task.acks_late and task.reject_on_worker_lost, name
    for name in ("workers.build.build", "workers.testing.verify", "workers.promote.promote"):
        assert TransientError in tasks[name].autoretry_for, name
        assert tasks[name].retry_backoff and tasks[name].max_retries == 5, name
    assert tasks["workers.check.check_image"].max_retries == 0  # the next check is the retry
    assert tasks["workers.check.check_images"].max_retries == 0
    assert tasks["workers.check.reconcile"].max_retries == 0  # so is the next reconcile
    assert tasks["workers.check.audit"].max_retries == 0
    assert tasks["workers.promote.cleanup"].max_retries == 0  # best effort; a leftover is storage


def test_the_pipeline_declaration_is_what_routing_and_limits_read(app) -> None:  # type: ignore[no-untyped-def]
    from shared.model.pipeline import PIPELINE

    annotate = app.conf.task_annotations[0].annotate
    for spec in PIPELINE:
        task = app.tasks[spec.task]
        assert app.amqp.router.route({}, spec.task)["queue"].name == spec.queue.value
        assert annotate(task)["time_limit"] == spec.time_limit_s(app_settings())


def app_settings():  # type: ignore[no-untyped-def]
    from workers.app import settings

    return settings()


def test_configuration_is_safe(app) -> None:  # type: ignore[no-untyped-def]
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert (
        conf.broker_transport_options["visibility_timeout"]
        > conf.task_annotations[0].annotate(app.tasks["workers.build.build"])["time_limit"]
    )
    assert conf.worker_send_task_events and conf.task_send_sent_event


def test_each_stage_routes_to_its_own_queue(app) -> None:  # type: ignore[no-untyped-def]
    router = app.amqp.router
    queues = {
        name: router.route({}, name)["queue"].name
        for name in (
            "workers.check.check_image",
            "workers.check.check_images",
            "workers.check.reconcile",
            "workers.build.build",
            "workers.testing.verify",
            "workers.promote.promote",
        )
    }
    assert queues == {
        "workers.check.check_image": "check",
        "workers.check.check_images": "check",
        "workers.check.reconcile": "check",
        "workers.build.build": "build",
        "workers.testing.verify": "test",
        "workers.promote.promote": "promote",
    }


def test_beat_checks_every_image_at_the_interval_in_batches() -> None:
    schedule = beat_schedule(load_definitions(ROOT / "images"), 60, 30, batch_size=50)
    assert schedule["check-1"]["task"] == CHECK_BATCH_TASK
    assert schedule["check-1"]["args"] == (["awscli"],)
    assert schedule["check-1"]["schedule"].total_seconds() == 60
    assert schedule["reconcile"]["task"] == RECONCILE_TASK
    assert schedule["reconcile"]["schedule"].total_seconds() == 30
    assert schedule["reconcile"]["options"]["expires"] == 30
    assert schedule["audit"]["task"] == AUDIT_TASK


def test_beat_cuts_the_images_into_batches_of_the_batch_size_in_name_order() -> None:
    images = [f"img{n:02d}" for n in reversed(range(7))]
    schedule = beat_schedule(images, 60, 30, batch_size=3)
    checks = {key: entry["args"][0] for key, entry in schedule.items() if key.startswith("check-")}
    assert checks == {
        "check-1": ["img00", "img01", "img02"],
        "check-2": ["img03", "img04", "img05"],
        "check-3": ["img06"],
    }
    assert schedule["check-1"]["options"]["argsrepr"] == "images=img00,img01,img02 (3)"


def test_a_tasks_shown_arguments_name_its_image_and_run_and_read_back() -> None:
    """Flower's Args column and task events show "image=… run=…" (sends.describe)."""
    shown = sends.describe("awscli", "6103320d7ab010a7")
    assert shown == "image=awscli run=6103320d7ab010a7"
    assert sends.described(shown) == {"image": "awscli", "run": "6103320d7ab010a7"}
    assert sends.describe_images(["awscli", "boto", "httpie", "ruff"]) == (
        "images=awscli,boto,httpie,… (4)"
    )
    schedule = beat_schedule(["awscli"], 60, 30, batch_size=50)
    assert schedule["check-1"]["options"]["argsrepr"] == "images=awscli (1)"
