"""The clients one process needs, built once from the settings and passed to every stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis

from shared.adapters.eventstore import EventStore
from shared.adapters.gitrepo import VersionsRepo
from shared.adapters.pypi import PyPIClient
from shared.adapters.registry import RegistryClient
from shared.adapters.vulnindex import VulnerabilityIndex
from shared.catalog import Catalog
from shared.config import Settings
from shared.definitions import ImageDefinition
from shared.errors import ConcurrencyError, ConfigError, StageError, TransientError
from shared.model import validate
from shared.model.events import Event, EventRefused
from shared.model.projection import ImageState, InvalidTransition, Projections, check_allowed
from shared.secrets import Masker

if TYPE_CHECKING:
    from shared.adapters.engine import Engine

# Appends that lose a race reload and decide again; this many losses in a row is an outage.
MAX_APPEND_TRIES = 50

Decision = Callable[[ImageState], Sequence[Event]]


@dataclass
class Context:
    """Settings, image definitions (read from their folders when used) and one client per
    outside system."""

    settings: Settings
    catalog: Catalog
    redis: redis.Redis
    store: EventStore
    projections: Projections
    pypi: PyPIClient
    registry: RegistryClient
    git: VersionsRepo | None
    vulns: VulnerabilityIndex
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def definitions(self) -> dict[str, ImageDefinition]:
        """The valid definitions as the images folder holds them now."""
        return self.catalog.definitions()

    def definition(self, image: str) -> ImageDefinition:
        """The current definition of `image`; a ConfigError when its folder is broken (the
        DefinitionError, naming file and field) or gone (listing the known images)."""
        name = validate.image_name(image)
        found = self.catalog.lookup(name)
        if isinstance(found, ConfigError):
            raise found
        if found is None:
            known = ", ".join(sorted(self.definitions)) or "none"
            raise ConfigError(
                f"unknown image {name!r}: no folder {self.catalog.images_dir / name} with an "
                f"image.toml (defined: {known}); add that folder to watch it"
            )
        return found

    def engine(self) -> Engine:
        """The Docker Engine client, connected on first use (check workers never need it)."""
        if self._engine is None:
            from shared.adapters.engine import Engine

            self._engine = Engine(self.settings)
        return self._engine

    def state(self, image: str) -> ImageState:
        return self.projections.load(image)

    def record(
        self, image: str, decide: Decision, known: ImageState | None = None
    ) -> tuple[ImageState, list[Event]]:
        """Append what `decide` returns for the current state, atomically; retry lost races.

        `known` is a state just loaded (a batch loads its images' states at once): decided on
        first, it costs no read; if the log moved on since, the append loses its race and the
        next try loads the current state. Returns the state `decide` saw and the events appended
        (possibly none). An event the model does not allow in that state is recorded as
        EventRefused and raises StageError.
        """
        for _ in range(MAX_APPEND_TRIES):
            state, known = known or self.projections.load(image), None
            new = list(decide(state))
            refusal = _refusal(state, new)
            try:
                self.store.append(image, [refusal] if refusal else new, state.position)
            except ConcurrencyError:
                continue
            if refusal:
                raise StageError(image, "record", f"refused {refusal.event_type}: {refusal.reason}")
            return state, new
        raise TransientError(f"{image}: event log too contended, {MAX_APPEND_TRIES} lost appends")


def _refusal(state: ImageState, new: Sequence[Event]) -> EventRefused | None:
    """The first of `new` the model refuses in `state`, as an EventRefused."""
    for event in new:
        try:
            check_allowed(state, event)
        except InvalidTransition as exc:
            return EventRefused(getattr(event, "run_id", ""), type(event).__name__, str(exc))
    return None


def build_context(settings: Settings) -> Context:
    """Everything a worker, beat or shell needs; no network traffic until first use."""
    client = redis.Redis.from_url(settings.redis_url, health_check_interval=30)
    store = EventStore(client, Masker.from_settings(settings))
    return Context(
        settings=settings,
        catalog=Catalog(settings.images_dir),
        redis=client,
        store=store,
        projections=Projections(client, store),
        pypi=PyPIClient(settings, client),
        registry=RegistryClient(settings),
        git=VersionsRepo(settings) if settings.git_url else None,
        vulns=VulnerabilityIndex(settings),
    )
