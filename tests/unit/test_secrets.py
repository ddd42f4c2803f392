"""Secrets masked in every spelling; upstream control sequences shown, never obeyed."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import quote

import pytest

from shared.logs import MaskingFilter
from shared.secrets import MASK, Masker, neutralize

pytestmark = pytest.mark.timeout(10)
SECRET = "s3cr+t/pa ss=word"


def test_every_spelling_of_a_secret_is_masked() -> None:
    mask = Masker.of([SECRET])
    basic = base64.b64encode(f"ci-bot:{SECRET}".encode()).decode()
    texts = [
        f"password {SECRET} in a message",
        f"https://host/?token={quote(SECRET, safe='')}",
        f"Authorization: Basic {basic}",
        f"raw base64 {base64.b64encode(SECRET.encode()).decode()}",
        json.dumps({"error": f"failed with {SECRET}"}),
    ]
    for text in texts:
        masked = mask(text)
        assert MASK in masked, text
        assert SECRET not in masked and quote(SECRET, safe="") not in masked and basic not in masked
        assert base64.b64decode(basic) == f"ci-bot:{SECRET}".encode()


@pytest.mark.parametrize("user", ["", "a", "ab", "abc", "x-access-token"])
def test_a_secret_inside_any_base64_text_is_masked_at_every_alignment(user: str) -> None:
    encoded = base64.b64encode(f"{user}:{SECRET}".encode()).decode()
    masked = Masker.of([SECRET])(f"Basic {encoded}")
    assert MASK in masked and encoded not in masked


def test_short_values_and_no_secrets_change_nothing() -> None:
    assert Masker.of(["testing"])("testing testing") == "testing testing"
    assert Masker.of([])("anything") == "anything"


def test_control_sequences_are_shown_not_obeyed() -> None:
    hostile = "ok\x1b[2K\rPASSED\x07\x9b31m\ttab\nnext"
    assert neutralize(hostile) == "ok\\x1b[2K\\x0dPASSED\\x07\\x9b31m\ttab\nnext"


def test_the_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "login %s\x1b[8m", (SECRET,), None)
    try:
        raise RuntimeError(f"token was {SECRET}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert MaskingFilter(Masker.of([SECRET])).filter(record)
    shown = logging.Formatter().format(record)
    assert SECRET not in shown and shown.count(MASK) == 2 and "\\x1b[8m" in shown


def test_the_settings_secrets_are_masked_the_redis_password_too() -> None:
    from shared.config import Settings

    settings = Settings(
        redis_url="redis://:R3dis%2Fgenerated-pw@127.0.0.1:6379/0",
        registry_password="Reg-generated-pw",
        git_token="Git-generated-token",
        aws_secret_access_key="Aws-generated-secret",
    )
    mask = Masker.from_settings(settings)
    for secret in ("R3dis/generated-pw", "Reg-generated-pw", "Git-generated-token"):
        assert mask(f"failed: {secret}!") == f"failed: {MASK}!"
    assert mask("Aws-generated-secret") == MASK
