"""`nomenclature replay`: re-publish or reclassify a range of a topic (`connectors.replay`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from connectors.topic_range import Bound, parse_bound
from streams.settings import Settings

SELECTION_HELP = (
    "--from-* is inclusive and --to-* exclusive; offsets as N (every partition) or P:N[,P:N…]; times in "
    "ISO 8601 (UTC when no zone is given), meaning the first record whose timestamp is at or after it"
)


def add_selection_arguments(p: argparse.ArgumentParser) -> None:
    """The range options: partitions, and one optional bound at each end."""
    p.add_argument("--partition", type=int, action="append", help="only this partition (repeat it)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-offset", help="first offset (inclusive)")
    start.add_argument("--from-time", help="first record at or after this time (inclusive)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--to-offset", help="end offset (exclusive)")
    stop.add_argument("--to-time", help="stop before the first record at or after this time")


def bounds(args: argparse.Namespace) -> tuple[Bound | None, Bound | None]:
    return parse_bound(args.from_offset, args.from_time), parse_bound(args.to_offset, args.to_time)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="re-publish a range of a topic (marked as replayed), or reclassify it with a model version",
        description="Select a range of --topic and re-publish it to --target (default nomenclature.raw), "
        "or with --reclassify score its items with --model into --target (default "
        "nomenclature.classified). The live consumer group is not used. " + SELECTION_HELP + ".",
    )
    p.add_argument("--topic", required=True, help="the topic to read")
    add_selection_arguments(p)
    p.add_argument(
        "--target",
        help="topic to write ('{version}' is replaced by the model version, e.g. "
        "nomenclature.backfill.{version}); created with the source's partition count if missing",
    )
    p.add_argument("--reclassify", action="store_true", help="classify the items again instead")
    p.add_argument("--model", help="model version or alias to reclassify with (implies --reclassify)")
    p.add_argument(
        "--rejected-topic", help="dead letters of a reclassification (default nomenclature.rejected)"
    )
    p.add_argument(
        "--explain-tokens", type=int, help="explanation length (default NOMENCLATURE_EXPLAIN_TOKENS)"
    )
    p.add_argument(
        "--processes", type=int, help="reclassify: scoring processes (default: one per core; 0: a thread)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    p.add_argument("--json", action="store_true", help="print the plan and the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace, settings: Settings) -> None:
    from tools.common import operator_errors

    with operator_errors():  # a bad selection or topic pair is a ValueError with the reason
        replay(args, settings)


def replay(args: argparse.Namespace, settings: Settings) -> None:
    from connectors.kafka_io import ensure_topic, topic_partitions
    from connectors.replay import RECLASSIFY, REPUBLISH, ReplayPlan, check_topics, run_replay
    from connectors.topic_range import plan_ranges
    from streams.pipeline.micro_batch import Models
    from streams.topics import CLASSIFIED, RAW, REJECTED
    from tools.common import run_sync

    mode = RECLASSIFY if args.reclassify or args.model else REPUBLISH
    scorer = models = None
    version = None
    if mode == RECLASSIFY:
        from models.registry.model_registry import ModelRegistry
        from streams.pipeline.scoring import Scorer, build_pipeline

        classifier = ModelRegistry(settings.models_dir).load(args.model or "champion")
        version = classifier.version
        scoring = {"scoring_processes": os.cpu_count() or 1 if args.processes is None else args.processes}
        if args.explain_tokens is not None:
            scoring["explain_tokens"] = args.explain_tokens
        settings = dataclasses.replace(settings, **scoring)
        models = Models(champion=classifier)
        scorer = Scorer(settings, build_pipeline(settings), models)
    target = (args.target or (CLASSIFIED if mode == RECLASSIFY else RAW)).replace("{version}", version or "")
    check_topics(mode, args.topic, target)
    start, stop = bounds(args)
    bootstrap = settings.bootstrap_servers
    ranges = run_sync(plan_ranges(bootstrap, args.topic, partitions=args.partition, start=start, stop=stop))
    plan = ReplayPlan(mode, args.topic, target, ranges, version, args.rejected_topic or REJECTED)
    if args.json:
        if args.dry_run:
            print(json.dumps({"plan": plan.as_dict()}, ensure_ascii=False, indent=2))
            return
    else:
        print(plan.describe(), flush=True)
        if args.dry_run:
            print("dry run: nothing written", file=sys.stderr)
            return
    partitions = run_sync(topic_partitions(bootstrap, args.topic)) or settings.partitions
    for topic in {target, *([plan.rejected_topic] if mode == RECLASSIFY else [])}:
        if run_sync(ensure_topic(bootstrap, topic, partitions, settings.replication_factor)):
            print(f"created topic {topic} ({partitions} partitions)", file=sys.stderr)
    summary = run_sync(
        run_replay(bootstrap, plan, scorer=scorer, models=models, progress=not args.no_progress)
    )
    if args.json:
        both = {"plan": plan.as_dict(), "summary": summary.as_dict()}
        print(json.dumps(both, ensure_ascii=False, indent=2))
    else:
        print(json.dumps(summary.as_dict(), ensure_ascii=False))
