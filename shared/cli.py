"""The `freshen` command line: status, rebuild, events and replay over the shell API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from shared import api, projection
from shared.errors import FreshenError


def _status(args: argparse.Namespace) -> int:
    from workers.app import context

    images = [args.image] if args.image else sorted(context().definitions)
    for image in images:
        print(repr(api.status(image)))
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    print(api.rebuild(args.image, version=args.version, force=args.force))
    return 0


def _events(args: argparse.Namespace) -> int:
    for record in api.events(args.image):
        doc = {"position": record.position, "at": record.at, "type": record.type}
        print(json.dumps({**doc, **asdict(record.event)}))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from workers.app import context

    replayed = api.replay()
    live = context().projections.all()
    same = all(
        projection.comparable(replayed[name]) == projection.comparable(live[name]) for name in live
    ) and set(replayed) == set(live)
    print(f"replayed {len(replayed)} images; live projection {'matches' if same else 'DIFFERS'}")
    return 0 if same else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="freshen", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="what each tag points at, and recent runs")
    status.add_argument("image", nargs="?", help="one image (default: all)")
    status.set_defaults(run=_status)
    rebuild = sub.add_parser("rebuild", help="start a run for an image")
    rebuild.add_argument("image")
    rebuild.add_argument("--version", help="a given release (default: the newest)")
    rebuild.add_argument("--force", action="store_true", help="rebuild inputs built before")
    rebuild.set_defaults(run=_rebuild)
    events = sub.add_parser("events", help="an image's event log as JSON lines")
    events.add_argument("image")
    events.set_defaults(run=_events)
    replay = sub.add_parser("replay", help="fold the log from scratch; compare with live state")
    replay.set_defaults(run=_replay)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except FreshenError as exc:
        print(f"freshen: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
