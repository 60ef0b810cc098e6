"""``nomenclature review``: the review queue from the command line — its answers exported to CSV or parquet
(``export``), its counts and the reviewers' agreement (``status``). Both read nomenclature.review and
nomenclature.corrections to their ends, as every worker's review page does (`streams.review.follow`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from streams.settings import Settings

FORMATS = {".csv": "csv", ".parquet": "parquet"}
COLUMNS = (
    "id", "name", "full_name", "model_version", "model_label", "confidence", "challenger_version",
    "challenger_label", "reasons", "uncertainty", "queued_at", "reviewer", "label", "agrees_with_model",
    "comment", "answered_model_version", "answered_at",
)  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser("review", help="the review queue: export its answers, show its counts and agreement")
    review = p.add_subparsers(dest="review_command", required=True)
    p = review.add_parser(
        "export",
        help="every answer to a queued item, with the item and what the models said, as CSV or parquet",
    )
    p.add_argument("--output", required=True, help="FILE.csv or FILE.parquet")
    p.set_defaults(func=cmd_review)
    p = review.add_parser("status", help="pending and reviewed items, answers, reviewers, Cohen's kappa")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_review)


def cmd_review(args: argparse.Namespace, settings: Settings) -> None:
    from tools.common import operator_errors

    with operator_errors():
        if args.review_command == "export":
            print(export(settings, Path(args.output)))
        else:
            print(status(settings, args.json))


def _board(settings: Settings) -> Any:
    from schemas import catalogue_from_url
    from streams.review.board import ReviewBoard
    from streams.review.follow import load
    from tools.common import run_sync

    catalogue = catalogue_from_url(settings.schema_registry_url)
    try:
        return run_sync(load(ReviewBoard(settings.review_votes), settings.bootstrap_servers, catalogue))
    except LookupError as exc:  # the topic does not exist: no worker ran on this cluster yet
        raise ValueError(f"{exc}: start a worker first (it creates the topics)") from None


def export(settings: Settings, output: Path) -> str:
    import pandas as pd

    kind = FORMATS.get(output.suffix.lower())
    if kind is None:
        raise ValueError(f"--output must end in .csv or .parquet, not {output.name!r}")
    board = _board(settings)
    frame = pd.DataFrame(list(board.export_rows()), columns=list(COLUMNS))
    for column in ("queued_at", "answered_at"):
        frame[column] = pd.to_datetime(frame[column], unit="ms", utc=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        frame.to_csv(output, index=False)
    else:
        frame.to_parquet(output, index=False)
    counts = board.counts()
    print(
        f"{len(frame)} answers to {counts['reviewed'] + counts['pending']} queued items "
        f"({counts['pending']} pending) by {counts['reviewers']} reviewers",
        file=sys.stderr,
    )
    return str(output)


def status(settings: Settings, as_json: bool) -> str:
    board = _board(settings)
    body = {**board.counts(), "votes": board.votes, "agreement": board.agreement()}
    if as_json:
        return json.dumps(body, ensure_ascii=False, indent=2)
    agreement = body["agreement"]
    kappa = "n/a" if agreement["kappa"] is None else f"{agreement['kappa']:.3f}"
    lines = [
        f"pending {body['pending']}, reviewed {body['reviewed']} ({body['votes']} answer(s) each), "
        f"{body['answers']} answers by {body['reviewers']} reviewers",
        f"agreement: Cohen's kappa {kappa} over {agreement['items']} items answered twice",
    ]
    for pair in agreement["pairs"]:
        pair_kappa = "n/a" if pair["kappa"] is None else f"{pair['kappa']:.3f}"
        lines.append(
            f"  {' · '.join(pair['reviewers'])}: {pair['items']} items, "
            f"{100 * pair['observed']:.0f}% agreed, kappa {pair_kappa}"
        )
    return "\n".join(lines)
