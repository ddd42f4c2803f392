"""The one module that speaks Apprise: one target per configured URL, sent one message at a time.

A target is named by a hash of its URL (stable across restarts, showing nothing of the URL) and
a label with only its scheme and index, so its delivery state, logs and metrics never carry a
token.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass

import apprise

# Apprise's e-mail plugin imports imghdr (for PGPy) when it loads, which Python 3.11 and 3.12
# warn is deprecated: a library's import, not freshen's code, and warnings are errors in tests.
with warnings.catch_warnings(), suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import imghdr  # noqa: F401

# Apprise's notification types: the colour or icon a service shows.
LEVELS = {
    "failure": apprise.NotifyType.FAILURE,
    "success": apprise.NotifyType.SUCCESS,
    "warning": apprise.NotifyType.WARNING,
    "info": apprise.NotifyType.INFO,
}


@dataclass(frozen=True)
class Target:
    """One Apprise URL: `id` keys its delivery state, `label` names it in logs and metrics."""

    id: str
    label: str
    url: str

    def __repr__(self) -> str:  # never the URL
        return f"Target({self.label})"


def scheme(url: str) -> str:
    """The URL's scheme, the only part of it ever shown ("?" when it has none)."""
    found = re.match(r"([A-Za-z][A-Za-z0-9+.-]{0,31})://", url)
    return found.group(1).lower() if found else "?"


def targets(urls: Sequence[str]) -> list[Target]:
    """A target per URL (a URL given twice is one target)."""
    found: dict[str, Target] = {}
    for index, url in enumerate(urls, start=1):
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        found.setdefault(digest, Target(digest, f"{scheme(url)}-{index}", url))
    return list(found.values())


def unusable(urls: Sequence[str]) -> str:
    """Why Apprise cannot use some of `urls` ("" when it can use all), naming each by index and
    scheme, never by its text."""
    bad = [
        f"URL {index} ({scheme(url)}://…)"
        for index, url in enumerate(urls, start=1)
        if apprise.Apprise.instantiate(url) is None
    ]
    if not bad:
        return ""
    return f"Apprise does not understand {', '.join(bad)}; see its list of services and URLs"


class Sender:
    """Sends to one target; what went wrong comes back as text, masked."""

    def __init__(self, target: Target, mask: Callable[[str], str]) -> None:
        self.target = target
        self._mask = mask
        self._apprise = apprise.Apprise()
        self._apprise.add(target.url)

    def send(self, title: str, body: str, level: str) -> str:
        """Deliver one message: "" when the service accepted it, else why not."""
        with apprise.LogCapture(level=logging.WARNING) as captured:  # type: ignore[no-untyped-call]
            try:
                accepted = bool(
                    self._apprise.notify(title=title, body=body, notify_type=LEVELS[level])
                )
            except Exception as exc:  # a plugin's bug must not stop the notifier
                accepted = False
                logging.getLogger("apprise").warning("%s: %s", type(exc).__name__, exc)
        if accepted:
            return ""
        lines = [line.split(" - ", 2)[-1] for line in captured.getvalue().splitlines()]
        return self._mask("; ".join(lines[-3:]) or "the service refused the notification")
