"""The `freshen` command line: status, rebuild (optionally waiting), events, replay, audit, the
operator overrides hold, release and rollback, and the metrics and notify services."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from shared import api
from shared.errors import FreshenError
from shared.model import projection

WAIT_POLL_S = 1.0


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


def _status(args: argparse.Namespace) -> int:
    images = [args.image] if args.image else api.images()
    shown = {image: api.status(image) for image in images}
    if args.json:
        _print_json({name: asdict(s) for name, s in shown.items()})
    else:
        print("\n\n".join(repr(s) for s in shown.values()))
    return 0


def _wait(image: str, run_id: str, as_json: bool) -> int:
    """Print each stage the run reaches; 0 when it is done, 1 when it failed."""
    seen: tuple[str, str] = ("", "")
    while True:
        run = api.run(image, run_id)
        if run is not None and (run.stage, run.status) != seen:
            seen = (run.stage, run.status)
            if not as_json:
                print(f"{time.strftime('%H:%M:%S')}  {run_id}  {run.stage:<10} {run.status}")
        if run is not None and run.status != "running":
            if as_json:
                _print_json(asdict(run))
            elif run.error:
                print(f"error: {run.error}", file=sys.stderr)
            return 0 if run.status == "done" else 1
        time.sleep(WAIT_POLL_S)


def _rebuild(args: argparse.Namespace) -> int:
    run_id = api.rebuild(args.image, version=args.version, force=args.force)
    if args.wait:
        return _wait(args.image, run_id, args.json)
    if args.json:
        _print_json({"run_id": run_id})
    else:
        print(run_id)
    return 0


def _events(args: argparse.Namespace) -> int:
    for record in api.events(args.image):
        data = asdict(record.event)
        if args.json:
            print(
                json.dumps(
                    {"position": record.position, "at": record.at, "type": record.type, **data}
                )
            )
        else:
            run = data.pop("run_id", "")
            detail = " ".join(f"{k}={str(v)[:60]}" for k, v in data.items() if k != "results")
            print(f"{record.position:>5}  {record.at}  {record.type:<18} {run:<17} {detail}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    replayed, live = api.replay(), api.live()
    differ = sorted(
        name
        for name in set(replayed) | set(live)
        if name not in replayed
        or name not in live
        or projection.comparable(replayed[name]) != projection.comparable(live[name])
    )
    events = sum(s.position for s in replayed.values())
    if args.json:
        _print_json({"images": len(replayed), "events": events, "differ": differ})
    else:
        verdict = f"DIFFERS for {', '.join(differ)}" if differ else "matches"
        print(f"replayed {events} events of {len(replayed)} images; live state {verdict}")
    return 1 if differ else 0


def _audit(args: argparse.Namespace) -> int:
    """Print each tag's verdict; exit 1 when any tag drifted."""
    reports = api.audit(args.image)
    if args.json:
        _print_json({r.image: [asdict(f) for f in r.findings] for r in reports})
    else:
        for report in reports:
            print(f"image {report.image}")
            for f in report.findings:
                print(f"  {f.tag:<28} {f.verdict:<10} log {f.expected[:19] or '-':<20} "
                      f"registry {f.found[:19] or '-'}")  # fmt: skip
    return 1 if any(r.drift for r in reports) else 0


def _hold(args: argparse.Namespace) -> int:
    held = api.hold(args.image, args.reason)
    print(f"{args.image}: promotions {'held' if held else 'were already held'}")
    return 0


def _release(args: argparse.Namespace) -> int:
    waiting = api.release(args.image, args.reason)
    print(f"{args.image}: promotions resumed; sent to promote: {' '.join(waiting) or 'none'}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    moved = api.rollback(args.image, args.run_id, args.reason)
    print(f"{args.image}: {' '.join(moved) or 'no tag'} now at run {args.run_id}")
    return 0


def _metrics(_args: argparse.Namespace) -> int:
    from shared import metrics

    return metrics.main()


def _notify(_args: argparse.Namespace) -> int:
    from shared.notify import service

    return service.main()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="freshen", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="what each tag points at, and recent runs")
    status.add_argument("image", nargs="?", help="one image (default: all)")
    status.set_defaults(run=_status)
    rebuild = sub.add_parser("rebuild", help="start a run for an image; prints its id")
    rebuild.add_argument("image")
    rebuild.add_argument("--version", help="a given release (default: the newest)")
    rebuild.add_argument("--force", action="store_true", help="rebuild inputs built before")
    rebuild.add_argument("--wait", action="store_true", help="follow the run; exit 1 if it fails")
    rebuild.set_defaults(run=_rebuild)
    events = sub.add_parser("events", help="an image's event log, oldest first")
    events.add_argument("image")
    events.set_defaults(run=_events)
    replay = sub.add_parser("replay", help="fold the log from scratch; compare with live state")
    replay.set_defaults(run=_replay)
    audit = sub.add_parser("audit", help="compare the registry's tags with the log; 1 on drift")
    audit.add_argument("image", nargs="?", help="one image (default: all)")
    audit.set_defaults(run=_audit)
    hold = sub.add_parser("hold", help="stop promotions of an image (recorded with who and why)")
    hold.add_argument("image")
    hold.add_argument("--reason", required=True)
    hold.set_defaults(run=_hold)
    release = sub.add_parser("release", help="resume promotions of an image")
    release.add_argument("image")
    release.add_argument("--reason", default="released")
    release.set_defaults(run=_release)
    rollback = sub.add_parser("rollback", help="move the moving tags back to an earlier run")
    rollback.add_argument("image")
    rollback.add_argument("run_id")
    rollback.add_argument("--reason", required=True)
    rollback.set_defaults(run=_rollback)
    metrics = sub.add_parser("metrics", help="serve Prometheus metrics from the event log")
    metrics.set_defaults(run=_metrics)
    notify = sub.add_parser("notify", help="send notifications of chosen events (Apprise URLs)")
    notify.set_defaults(run=_notify)
    for command in (status, rebuild, events, replay, audit):
        command.add_argument("--json", action="store_true", help="machine-readable output")
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
