"""The notifier's settings: Apprise URLs are secrets (masked with every token inside them in
logs, exception text and recorded failures), chosen events are checked by name."""

from __future__ import annotations

import logging
import os

import pytest

from shared.config import load_settings
from shared.errors import ConfigError
from shared.logs import MaskingFilter
from shared.secrets import MASK, Masker

pytestmark = pytest.mark.timeout(10)
SLACK = "slack://T0ABCD1234/B0EFGH5678/xoxbDistinctive9zQ/#alerts"
DISCORD = "discord://1234567890123/WebhookTok3nValue"
MAIL = "mailto://ops.bot:Mai1Passw0rdX@example.com?to=a@example.com,b@example.com"
JSON = "json://127.0.0.1:8088/hooks/Pa7hTokenXyz?:source=freshen&token=Qu3ryTokenAbc"
TOKENS = [
    "T0ABCD1234", "B0EFGH5678", "xoxbDistinctive9zQ", "1234567890123", "WebhookTok3nValue",
    "Mai1Passw0rdX", "Pa7hTokenXyz", "Qu3ryTokenAbc",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("FRESHEN_")]:
        monkeypatch.delenv(name)


def test_urls_are_split_on_spaces_new_lines_and_commas_before_a_scheme(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRESHEN_NOTIFY_URLS", f"{SLACK} {DISCORD}\n{MAIL},{JSON}")
    urls = [u.get_secret_value() for u in load_settings().notify_urls]
    assert urls == [SLACK, DISCORD, MAIL, JSON]  # the comma inside `to=` stays


def test_the_urls_and_every_token_in_them_are_masked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FRESHEN_NOTIFY_URLS", " ".join([SLACK, DISCORD, MAIL, JSON]))
    settings = load_settings()
    assert not any(token in repr(settings) for token in TOKENS)
    masker = Masker.from_settings(settings)
    # How Apprise and requests show them: the URL rebuilt, or one part alone.
    text = (
        "POST URL: https://hooks.slack.com/services/T0ABCD1234/B0EFGH5678/xoxbDistinctive9zQ; "
        "https://discord.com/api/webhooks/1234567890123/WebhookTok3nValue; login ops.bot "
        "Mai1Passw0rdX; http://127.0.0.1:8088/hooks/Pa7hTokenXyz?token=Qu3ryTokenAbc"
    )
    masked = masker(text)
    assert not any(token in masked for token in TOKENS), masked
    # Names of places stay readable: they hold no token.
    assert "https://hooks.slack.com/services/" in masked and "127.0.0.1:8088/hooks/" in masked
    logger = logging.getLogger("test.notify.masking")
    logger.addFilter(MaskingFilter(masker))
    with caplog.at_level(logging.INFO, logger="test.notify.masking"):
        try:
            raise RuntimeError(f"send failed: {SLACK}")
        except RuntimeError:
            logger.exception("delivery to %s failed", DISCORD)
    assert MASK in caplog.text and not any(token in caplog.text for token in TOKENS)


def test_a_url_apprise_does_not_understand_is_an_error_that_does_not_show_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRESHEN_NOTIFY_URLS", f"{SLACK} nosuchservice://Secr3tTokenValue/x")
    with pytest.raises(ConfigError, match=r"FRESHEN_NOTIFY_URLS.*URL 2 \(nosuchservice://…\)") as e:
        load_settings()
    assert "Secr3tTokenValue" not in str(e.value)
    monkeypatch.setenv("FRESHEN_NOTIFY_URLS", "Secr3tTokenValue@hooks.example.com/x")
    with pytest.raises(ConfigError, match=r"URL 1 \(\?://…\)") as e:
        load_settings()
    assert "Secr3tTokenValue" not in str(e.value)


def test_chosen_events_are_checked_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "Promoted" in load_settings().notify_events  # the defaults are all known
    monkeypatch.setenv("FRESHEN_NOTIFY_EVENTS", "Promoted,TestsFailed")
    assert load_settings().notify_events == ("Promoted", "TestsFailed")
    monkeypatch.setenv("FRESHEN_NOTIFY_EVENTS", "Promoted,TestFailed")
    with pytest.raises(ConfigError, match=r"FRESHEN_NOTIFY_EVENTS.*TestFailed"):
        load_settings()
