"""A responder for `LoopbackServer` that forwards every call to a real registry and, once armed,
stops at one tag write so a test can kill the client right there.

Armed with (repository, point): point 0 stops the first HEAD or PUT of a tag of that repository
without forwarding it (nothing written yet); point k forwards the k-th tag PUT, so the registry
holds the write, and withholds the answer. `hit` is set when a request is stopped; the request
waits until `release` is set (or `wait_s` passes) and then gets its answer, which a killed
client never reads. Digests and `develop*` candidate tags are never stopped.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from tests.support.registry_proxy import Reply, Seen, forward


class TagWriteGate:
    def __init__(self, upstream: str, wait_s: float = 120) -> None:
        self.upstream = upstream
        self.wait_s = wait_s
        self.hit = threading.Event()  # a request is stopped at the armed point
        self.release = threading.Event()  # the test is done with it
        self._lock = threading.Lock()
        self._armed: tuple[str, int] | None = None  # (repository, point)
        self._puts = 0

    def arm(self, repository: str, point: int) -> None:
        with self._lock:
            self._armed, self._puts = (repository, point), 0
            self.hit.clear()
            self.release.clear()

    def respond(self, seen: Seen) -> Reply:
        point = self._stops_at(seen)
        if point is None:
            return forward(self.upstream, seen)
        reply = Reply(503) if point == 0 else forward(self.upstream, seen)
        self.hit.set()
        self.release.wait(self.wait_s)
        return reply

    def _stops_at(self, seen: Seen) -> int | None:
        with self._lock:
            if self._armed is None:
                return None
            repository, point = self._armed
            path = urlsplit(seen.path).path
            tag = path.removeprefix(f"/v2/{repository}/manifests/")
            if tag == path or tag.startswith(("sha256:", "develop")):
                return None  # not a tag of the armed repository
            if seen.method == "PUT":
                self._puts += 1
            if point == 0:
                at_point = seen.method in ("HEAD", "PUT")
            else:
                at_point = seen.method == "PUT" and self._puts == point
            if not at_point:
                return None
            self._armed = None
            return point
