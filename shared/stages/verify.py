"""Test: run the definition's test script inside the built image (pulled by digest unless the
engine has it), the vulnerability gate beside it."""

from __future__ import annotations

import hashlib
import logging

from shared.adapters.lease import Lease
from shared.config import Settings, soft_time_limit_s
from shared.constants import LEASE_SLACK_S, STOP_GRACE_S
from shared.context import Context
from shared.errors import StageError
from shared.model.events import StepRecord, TestsFailed, TestStarted
from shared.model.pipeline import Phase, Stage, Status
from shared.stages import find_run, lease_name, record_attempt, record_failure, vulngate
from shared.stages.build import pulled_by_digest

log = logging.getLogger(__name__)
STAGE = Stage.TEST


# Where the test's AWS credentials are copied in (the AWS CLI and SDKs read the file named by
# AWS_SHARED_CREDENTIALS_FILE): a file, so the secret never shows in `docker inspect`.
AWS_CREDENTIALS_PATH = "/run/freshen/aws-credentials"


def container_environment(
    settings: Settings, image: str, run_id: str, test_id: str
) -> dict[str, str]:
    """The test container's environment: where its test credentials are, ids, nothing else (the
    engine adds AWS_ENDPOINT_URL, naming the test's own moto, in moto mode)."""
    return {
        "AWS_SHARED_CREDENTIALS_FILE": AWS_CREDENTIALS_PATH,
        "AWS_DEFAULT_REGION": settings.aws_region,
        "FRESHEN_IMAGE": image,
        "FRESHEN_RUN_ID": run_id,
        "FRESHEN_TEST_ID": test_id,
    }


def container_files(settings: Settings) -> dict[str, bytes]:
    """The files copied into the test container: its AWS test credentials."""
    secret = settings.aws_secret_access_key.get_secret_value()
    profile = (
        f"[default]\naws_access_key_id = {settings.aws_access_key_id}\n"
        f"aws_secret_access_key = {secret}\n"
    )
    return {AWS_CREDENTIALS_PATH: profile.encode()}


def attempt_test_id(run_id: str, attempt: str) -> str:
    """The test's id (container name, bucket names): the same for a redelivered attempt, so the
    redelivery finds and stops the container its killed predecessor left running."""
    return run_id + hashlib.sha256(attempt.encode()).hexdigest()[:8]


def container_timeout_s(time_limit_s: int) -> float:
    """How long the test container may run: it is stopped gracefully (its clean-up trap runs)
    and the outcome recorded before the stage's soft time limit."""
    return float(max(soft_time_limit_s(time_limit_s) - STOP_GRACE_S - 2, 1))


def verify(ctx: Context, image: str, run_id: str, attempt: str) -> bool:
    """Test the run's built digest; True when it passed, StageError (recorded) when not."""
    definition = ctx.definition(image)
    run = find_run(ctx.state(image), run_id, STAGE)
    if run.status == Status.FAILED or run.reached(Phase.TESTED):
        return run.status == Status.RUNNING and run.stage == Phase.TESTED  # redelivered
    if not run.reached(Phase.BUILT):
        raise StageError(image, STAGE, f"run {run_id} has no built image yet")
    limit = ctx.settings.test_time_limit_s
    with Lease(ctx.redis, lease_name(image, run_id, STAGE), attempt) as held:
        if not held:
            log.info("%s: run %s: another attempt is testing it; leaving it", image, run_id)
            return False
        record_attempt(ctx, image, run_id, STAGE, TestStarted(run_id, attempt))
        engine = ctx.engine()
        # Containers of attempts killed with their worker: none can be running any more.
        engine.remove_leftovers(STAGE, older_than_s=limit + LEASE_SLACK_S)
        test_id = attempt_test_id(run_id, attempt)
        candidate = pulled_by_digest(ctx, definition, run.digest)
        engine.ensure_image(candidate, STAGE)  # once: the gate and the tests both read it
        policy = definition.spec.vulnerabilities
        with vulngate.scan_beside(ctx, image, run_id, candidate, policy) as scanning:
            outcome = engine.run_test(
                candidate,
                definition.test_script,
                container_environment(ctx.settings, image, run_id, test_id),
                secret_files=container_files(ctx.settings),
                timeout_s=container_timeout_s(limit),
                name=f"freshen-test-{image}-{test_id}",
            )
        results = tuple(StepRecord(s.name, s.exit_code, s.output_tail) for s in outcome.steps)
        if outcome.passed:
            found = scanning.result()
            vulngate.record_passed(ctx, image, run, results, found, policy)
            log.info("%s: run %s: tests passed (%d commands)", image, run_id, len(results))
            return True
        failed = outcome.failed_step or "test script"
        tail = next((s.output_tail for s in outcome.steps if s.name == failed), outcome.output_tail)
        record_failure(ctx, image, run_id, TestsFailed(run_id, run.digest, failed, tail, results))
        raise StageError(image, STAGE, f"run {run_id}: command {failed!r} failed; not promoted")
