"""Secret values masked wherever text leaves freshen (log lines, events, exception text), and
terminal control sequences from upstream output made visible instead of obeyed.

A secret can leak in other spellings than its own: inside the base64 of an HTTP Basic header,
URL-encoded in a URL, JSON-escaped in an event. Every configured secret is masked in each of
these (a base64 text keeps its characters around the masked part).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from shared.config import Settings

MASK = "***"
# Shorter values are not masked: a 3-letter password would mask every word it occurs in (and is
# refused as weak anyway); the test credential "testing" is no secret.
MIN_SECRET_CHARS = 8
# C0 controls but tab and newline, DEL and C1 controls: ESC sequences rewrite a terminal (hide a
# line, fake a prompt, set a window title), and a carriage return overwrites what was printed.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# A part of a notification URL that is a word (a path like `services`), or a host name with a
# dot (`hooks.slack.com`), names a place rather than holding a token.
_PLAIN = re.compile(r"[a-z]+|localhost|.*\..*")


def neutralize(text: str) -> str:
    """Upstream output with every control character shown as an escape (`\\x1b`), not obeyed."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def base64_cores(data: bytes) -> set[str]:
    """What every base64 text holding `data` contains, wherever `data` sits in it (after
    `user:` in a Basic credential, say): for each of the three alignments, the encoding of the
    whole 3-byte groups that lie inside `data`."""
    cores = set()
    for shift in range(3):
        padded = b"\0" * shift + data
        start, end = -(-shift // 3) * 3, len(padded) - len(padded) % 3
        if end > start:
            core = base64.b64encode(padded[start:end]).decode()
            cores |= {core, core.replace("+", "-").replace("/", "_")}
    return cores


def spellings(value: str) -> set[str]:
    """The forms a secret may take in text: itself, URL-encoded, JSON-escaped, and inside any
    base64 text (a Basic credential, a docker config)."""
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    forms |= base64_cores(value.encode())
    return {f for f in forms if len(f) >= MIN_SECRET_CHARS}


def url_secrets(url: str) -> list[str]:
    """What to mask of a notification URL: itself and each part that may be a token. Apprise
    URLs carry tokens as user, password, host (`slack://TOKEN_A/…`), path segments
    (`discord://ID/TOKEN`) and query values (`?token=…`), and its log lines show them alone."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2].rsplit(":", 1)[0]  # as written: tokens keep case
    found = [url, parts.username or "", parts.password or "", host]
    found += parts.path.split("/") + [v for _, v in parse_qsl(parts.query)]
    return [unquote(p) for p in found if p and not _PLAIN.fullmatch(unquote(p))]


@dataclass(frozen=True)
class Masker:
    """Replaces every spelling of the configured secrets with `***`."""

    pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, secrets: Iterable[str]) -> Masker:
        forms = set()
        for value in secrets:
            if len(value) >= MIN_SECRET_CHARS:
                forms |= spellings(value)
        if not forms:
            return cls(None)
        # Longest first, so a base64 form is masked whole, not around a shorter spelling.
        ordered = sorted(forms, key=len, reverse=True)
        return cls(re.compile("|".join(re.escape(f) for f in ordered)))

    @classmethod
    def from_settings(cls, settings: Settings) -> Masker:
        values = [
            s.get_secret_value()
            for s in (
                settings.registry_password,
                settings.git_token,
                settings.aws_secret_access_key,
            )
            if s is not None
        ]
        values += [p for url in settings.notify_urls for p in url_secrets(url.get_secret_value())]
        redis_password = urlsplit(settings.redis_url).password  # compose generates one
        return cls.of([*values, *([unquote(redis_password)] if redis_password else [])])

    def __call__(self, text: str) -> str:
        return text if self.pattern is None else self.pattern.sub(MASK, text)
