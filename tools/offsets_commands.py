"""`nomenclature offsets show|reset`: a consumer group's committed offsets, and rewinding the live pipeline
(`connectors.group_offsets`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from streams.settings import Settings

LATEST = 2**62  # clamped to each partition's log end


def add_parser(sub: Any) -> None:
    p = sub.add_parser("offsets", help="a consumer group's offsets: show them, or reset them (group stopped)")
    offsets = p.add_subparsers(dest="offsets_command", required=True)

    show = offsets.add_parser("show", help="committed offset, log start and end, and lag per partition")
    show.add_argument("--group", help="consumer group (default: NOMENCLATURE_APP_ID, the workers' group)")
    show.add_argument("--topic", action="append", help="only this topic (repeat it; default: every topic "
                      "the group has committed offsets for)")  # fmt: skip
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    reset = offsets.add_parser(
        "reset",
        help="move the group's offsets (refused while the group has members)",
        description="Move a stopped group's committed offsets, so that its workers go on from there when "
        "they start: like `kafka-consumer-groups --reset-offsets`, it is refused while the group has "
        "members. "
        "--to-time means the first record at or after that time (ISO 8601, UTC when no zone is given).",
    )
    reset.add_argument("--group", help="consumer group (default: NOMENCLATURE_APP_ID, the workers' group)")
    reset.add_argument("--topic", action="append", help="topic to reset (repeat it; default: the raw topics)")
    reset.add_argument("--partition", type=int, action="append", help="only this partition (repeat it)")
    to = reset.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="each partition's first offset")
    to.add_argument("--to-latest", action="store_true", help="each partition's end (skip what is there)")
    to.add_argument("--to-offset", help="N (every partition) or P:N[,P:N…]; clamped to the log")
    to.add_argument("--to-time", help="the first record at or after this time")
    reset.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    reset.add_argument(
        "--members-gone",
        action="store_true",
        help="embedded broker only: it never removes members that stopped; say that every worker is stopped",
    )
    reset.add_argument("--json", action="store_true")
    reset.set_defaults(func=cmd_reset)


def cmd_show(args: argparse.Namespace, settings: Settings) -> None:
    from connectors.group_offsets import all_partitions, describe_group, offset_rows
    from tools.common import run_sync

    group = args.group or settings.app_id
    bootstrap = settings.bootstrap_servers
    state = run_sync(describe_group(bootstrap, group))
    tps = run_sync(all_partitions(bootstrap, args.topic))
    rows = run_sync(offset_rows(bootstrap, group, tps, only_committed=not args.topic))
    if args.json:
        print(json.dumps({**state.as_dict(), "offsets": [r.as_dict() for r in rows]}, indent=2))
        return
    print(f"group {group}: {state.state}, {len(state.members)} member(s)")
    print(f"{'TOPIC':<40} {'PARTITION':>9} {'COMMITTED':>10} {'LOG START':>10} {'LOG END':>10} {'LAG':>8}")
    for r in rows:
        committed = "-" if r.committed is None else r.committed
        lag = "-" if r.lag is None else r.lag
        print(f"{r.topic:<40} {r.partition:>9} {committed:>10} {r.log_start:>10} {r.log_end:>10} {lag:>8}")
    if not rows:
        print("(no committed offsets)")


def cmd_reset(args: argparse.Namespace, settings: Settings) -> None:
    from tools.common import operator_errors

    with operator_errors():  # a bad selection is a ValueError with the reason
        reset(args, settings)


def reset(args: argparse.Namespace, settings: Settings) -> None:
    from aiokafka import TopicPartition

    from connectors.group_offsets import GroupActiveError, commit_offsets, committed_offsets
    from connectors.topic_range import Bound, parse_bound, plan_ranges
    from streams.topics import raw_topics
    from tools.common import run_sync

    group = args.group or settings.app_id
    bootstrap = settings.bootstrap_servers
    topics = args.topic or run_sync(raw_topics(bootstrap))
    if args.to_latest:
        bound = Bound(offsets={-1: LATEST})
    else:  # --to-earliest leaves it None: each partition's log start
        bound = parse_bound(args.to_offset, args.to_time)
    ranges = []
    for topic in topics:
        ranges += run_sync(plan_ranges(bootstrap, topic, partitions=args.partition, start=bound))
    tps = [TopicPartition(r.topic, r.partition) for r in ranges]
    current = run_sync(committed_offsets(bootstrap, group, tps))
    plan = [
        {
            "topic": r.topic,
            "partition": r.partition,
            "current": current[TopicPartition(r.topic, r.partition)],
            "new": r.start,
            "log_start": r.log_start,
            "log_end": r.log_end,
            "lag_after": r.log_end - r.start,
            "found_by": r.found_by,
        }
        for r in ranges
    ]
    if not args.json:
        print(f"group {group}: reset plan")
        print(
            f"{'TOPIC':<40} {'PARTITION':>9} {'CURRENT':>10} {'NEW':>10} {'LOG END':>10} {'LAG AFTER':>10}"
            "  FOUND BY"
        )
        for row in plan:
            now = "-" if row["current"] is None else row["current"]
            print(
                f"{row['topic']:<40} {row['partition']:>9} {now:>10} {row['new']:>10} {row['log_end']:>10} "
                f"{row['lag_after']:>10}  {row['found_by']}"
            )
    if args.dry_run:
        if args.json:
            print(json.dumps({"group": group, "dry_run": True, "plan": plan}, indent=2))
        else:
            print("dry run: nothing changed", file=sys.stderr)
        return
    offsets = {TopicPartition(r.topic, r.partition): r.start for r in ranges}
    try:
        run_sync(
            commit_offsets(
                bootstrap, group, offsets, is_tansu=settings.is_tansu, members_gone=args.members_gone
            )
        )
    except GroupActiveError as exc:
        raise SystemExit(f"nomenclature offsets reset: refused: {exc}") from None
    if args.json:
        print(json.dumps({"group": group, "dry_run": False, "plan": plan}, indent=2))
    else:
        print(f"group {group}: {len(offsets)} partition offset(s) committed", file=sys.stderr)
