"""`nomenclature sink parquet|sqlite`: topics into a date-partitioned parquet dataset or a SQLite file
(`connectors/sinks/parquet.py`, `connectors/sinks/sqlite.py`, their loop in
`connectors/sinks/topic_consumer.py`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streams.settings import Settings

PARQUET_GROUP_PREFIX = "nomenclature-sink-parquet-"
SQLITE_GROUP = "nomenclature-sink-sqlite"


def add_parser(sub: Any) -> None:
    from streams.topics import CLASSIFIED

    p = sub.add_parser("sink", help="write topics to a parquet dataset or a SQLite database")
    sinks = p.add_subparsers(dest="sink_command", required=True)

    p = sinks.add_parser(
        "parquet", help="a topic as date-partitioned parquet (<out>/<topic>/date=YYYY-MM-DD/), exactly once"
    )
    p.add_argument("--topic", default=CLASSIFIED)
    p.add_argument(
        "--schema",
        help="for a topic that is not the service's: the topic whose schema its records have "
        "(e.g. nomenclature.classified) or a schemas/*.avsc name",
    )
    p.add_argument("--out", required=True, help="dataset root; the topic's dataset is <out>/<topic>")
    p.add_argument("--group", help=f"consumer group (default {PARQUET_GROUP_PREFIX}<topic>)")
    p.add_argument("--flush-rows", type=int, default=50_000, help="write files once this many records wait")
    p.add_argument(
        "--flush-seconds", type=float, default=60.0, help="... or once the oldest waited this long"
    )
    p.add_argument("--compression", default="zstd", choices=("zstd", "snappy", "gzip", "lz4", "none"))
    p.add_argument(
        "--resume-committed",
        action="store_true",
        help="let a new dataset start at the offsets its group already committed (refused otherwise)",
    )
    _mode(p)
    p.set_defaults(func=cmd_sink_parquet)

    p = sinks.add_parser("sqlite", help="predictions, items, corrections and model events in one SQLite file")
    p.add_argument("--db", required=True, help="database file (created if absent)")
    p.add_argument(
        "--topics",
        nargs="+",
        default=None,
        metavar="TOPIC[=SCHEMA]",
        help="default: nomenclature.classified, .corrections and .models; add nomenclature.shadow for the "
        "challenger's predictions; TOPIC=SCHEMA reads a topic of another name whose records have the schema "
        "of SCHEMA, a topic of the service",
    )
    p.add_argument("--group", default=SQLITE_GROUP, help="consumer group the positions are also committed to")
    p.add_argument("--models-dir", help="model registry for model_versions (default NOMENCLATURE_MODELS_DIR)")
    p.add_argument("--no-registry", action="store_true", help="leave model_versions alone")
    p.add_argument("--flush-rows", type=int, default=5_000, help="commit a transaction once this many wait")
    p.add_argument("--flush-seconds", type=float, default=1.0, help="... or once the oldest waited this long")
    _mode(p)
    p.set_defaults(func=cmd_sink_sqlite)


def _mode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress-seconds", type=float, default=5.0, help="progress line on stderr this often")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--once", action="store_true", help="drain to the end offsets taken at start, print a summary, exit"
    )
    mode.add_argument("--follow", action="store_true", help="keep following until Ctrl-C/SIGTERM (default)")


def cmd_sink_parquet(args: argparse.Namespace, settings: Settings) -> None:
    from connectors.sinks.parquet import ParquetSink
    from connectors.sinks.topic_consumer import topic_spec
    from schemas import catalogue_from_url

    with _operator_errors():
        spec = topic_spec(args.topic, args.schema)
        options = _options(args, settings, args.group or f"{PARQUET_GROUP_PREFIX}{args.topic}")
        sink = ParquetSink(
            Path(args.out),
            spec,
            catalogue_from_url(settings.schema_registry_url),
            options.group,
            resume_committed=args.resume_committed,
            compression=args.compression,
        )
        with sink:
            summary = _run(sink, [spec.name], options)
    print(json.dumps(summary, ensure_ascii=False, indent=2))


def cmd_sink_sqlite(args: argparse.Namespace, settings: Settings) -> None:
    from connectors.sinks.sqlite import DEFAULT_TOPICS, SqliteSink
    from models.registry.model_registry import ModelRegistry
    from schemas import catalogue_from_url

    with _operator_errors():
        registry = None
        if not args.no_registry:
            registry = ModelRegistry(Path(args.models_dir) if args.models_dir else settings.models_dir)
        sink = SqliteSink(
            Path(args.db),
            args.topics or DEFAULT_TOPICS,
            catalogue_from_url(settings.schema_registry_url),
            registry=registry,
        )
        with sink:
            summary = _run(sink, sink.topic_names, _options(args, settings, args.group))
    print(json.dumps(summary, ensure_ascii=False, indent=2))


def _options(args: argparse.Namespace, settings: Settings, group: str) -> Any:
    from connectors.sinks.topic_consumer import ConsumeOptions

    return ConsumeOptions(
        bootstrap=settings.bootstrap_servers,
        group=group,
        once=args.once,
        flush_rows=args.flush_rows,
        flush_seconds=args.flush_seconds,
        is_tansu=settings.is_tansu,
        progress_seconds=args.progress_seconds,
    )


def _run(sink: Any, topics: list[str], options: Any) -> dict[str, Any]:
    from connectors.sinks.topic_consumer import install_stop_signals, run

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        install_stop_signals(stop)
        return await run(sink, topics, options, stop)

    return asyncio.run(main())


@contextlib.contextmanager
def _operator_errors() -> Iterator[None]:
    """A sink's expected failures as one line on stderr and exit status 1, not a traceback."""
    from aiokafka.errors import KafkaConnectionError

    from connectors.sinks.topic_consumer import SinkError

    try:
        yield
    except SinkError as exc:
        raise SystemExit(f"nomenclature sink: {exc}") from None
    except KafkaConnectionError as exc:
        raise SystemExit(f"nomenclature sink: no broker answers: {exc}") from None
