"""``nomenclature``: the operator's command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from streams.settings import Settings
from tools.common import SAMPLE_ITEMS, ensure_model, operator_errors, run_sync, train_model


def cmd_train(args: argparse.Namespace, settings: Settings) -> str:
    return train_model(
        settings,
        data=args.data,
        dataset=args.dataset,
        validation_dataset=args.validation_dataset,
        extra=args.extra,
        features=args.features,
        seed=args.seed,
        max_epochs=args.max_epochs,
        patience=args.patience,
        notes=args.notes,
    )


def cmd_dataset_build(args: argparse.Namespace, settings: Settings) -> None:
    if args.input:
        _build_export_dataset(args)
        return
    from models.datasets.builder import DEFAULT_SEED, build_dataset, summary

    export_only = ("output", "csv", "mapping", "label_map", "encoding", "sheet")
    for option in export_only:
        if getattr(args, option):
            raise SystemExit(
                f"nomenclature: --{option.replace('_', '-')} goes with --input (a dataset from exports); "
                "the bundled dataset is written as a directory with --out DIR"
            )
    out = Path(args.out) if args.out else None
    seed = DEFAULT_SEED if args.seed is None else args.seed
    manifest = build_dataset(out, datasets_root=settings.data_dir / "datasets", seed=seed)
    print(json.dumps(summary(manifest), ensure_ascii=False, indent=2))


def _build_export_dataset(args: argparse.Namespace) -> None:
    from connectors.files.column_mapping import load_overrides
    from connectors.files.export_dataset import build_export_dataset
    from connectors.files.labels import load_label_map
    from connectors.files.source import SourceOptions

    if args.out or args.seed is not None:
        raise SystemExit(
            "nomenclature: with --input the dataset is one parquet file: give --output FILE.parquet "
            "(--out DIR and --seed are for the bundled dataset)"
        )
    if not args.output:
        raise SystemExit("nomenclature: --input needs --output FILE.parquet")
    with operator_errors():
        options = SourceOptions(
            encoding=args.encoding,
            sheet=args.sheet,
            overrides=load_overrides(Path(args.mapping)) if args.mapping else None,
        )
        summary = build_export_dataset(
            [Path(p) for p in args.input],
            Path(args.output),
            csv_path=Path(args.csv) if args.csv else None,
            options=options,
            label_overrides=load_label_map(Path(args.label_map)) if args.label_map else None,
        )
    print(json.dumps(summary, ensure_ascii=False, indent=2))


def cmd_dataset_scale(args: argparse.Namespace, settings: Settings) -> None:
    from models.datasets.scale_set import build_scale_set

    manifest = build_scale_set(args.rows, Path(args.out), seed=args.seed, shard_rows=args.shard_rows)
    print(json.dumps({k: v for k, v in manifest.items() if k != "shards"}, ensure_ascii=False, indent=2))


def cmd_broker(args: argparse.Namespace, settings: Settings) -> None:
    import signal

    from tools.broker import EmbeddedBroker, KafkaBroker, MissingKafka

    port = args.port or settings.broker_port
    broker: EmbeddedBroker | KafkaBroker
    if args.flavor == "kafka":
        broker = KafkaBroker(port, Path(args.data_dir) if args.data_dir else None)
        what = "Apache Kafka (KRaft, one node)"
    else:
        if args.data_dir:
            raise SystemExit("nomenclature broker: --data-dir is for --flavor kafka (Tansu keeps no files)")
        broker = EmbeddedBroker(port)
        what = "embedded broker (Tansu)"
    try:
        broker.start()
    except (MissingKafka, RuntimeError, TimeoutError) as exc:
        raise SystemExit(f"nomenclature broker: {exc}") from None
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the broker as Ctrl-C does
    where = f"; data in {broker.data_dir}" if isinstance(broker, KafkaBroker) else ""
    print(
        f"{what} listening on {broker.bootstrap}{where}; "
        f"use it with KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}; Ctrl-C stops it",
        flush=True,
    )
    try:
        assert broker.process is not None
        code = broker.process.wait()
        raise SystemExit(f"nomenclature broker: the broker exited with code {code}")
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    import faust

    from models.registry.model_registry import ModelRegistry
    from schemas import catalogue_from_url
    from streams.app import create_app
    from streams.lifecycle.model_events import read_state
    from streams.lifecycle.model_follower import NoModelError
    from streams.runtime.broker_wait import BrokerUnreachable, wait_for_broker
    from streams.topics import ensure_topics, raw_topics
    from tools.broker import EmbeddedBroker, forget_local_tables, port_is_free

    broker = None
    if settings.embedded_broker and port_is_free(settings.broker_port):
        broker = EmbeddedBroker(settings.broker_port).start()
        forget_local_tables(settings.tables_dir)
        print(f"started the embedded broker on {broker.bootstrap}", flush=True)
    try:
        if args.train_if_missing:
            ensure_model(settings)
        try:
            answer = run_sync(wait_for_broker(settings.bootstrap_servers, settings.broker_wait_seconds))
        except BrokerUnreachable as exc:
            raise SystemExit(f"nomenclature worker: {exc}") from None
        if settings.broker_flavor == "auto" and answer.is_tansu and not settings.is_tansu:
            print(
                f"the broker at {settings.bootstrap_servers} is Tansu (cluster id {answer.cluster_id}): "
                "its workarounds apply (NOMENCLATURE_BROKER_FLAVOR=kafka turns them off)",
                flush=True,
            )
            settings = dataclasses.replace(settings, broker_flavor="tansu")
        run_sync(
            ensure_topics(
                settings.bootstrap_servers, settings.partitions, settings.replication_factor, settings.app_id
            )
        )
        registry = ModelRegistry(settings.models_dir)
        catalogue = catalogue_from_url(settings.schema_registry_url)
        state = run_sync(read_state(settings.bootstrap_servers, catalogue, registry.registry_id()))
        try:
            app = create_app(settings, run_sync(raw_topics(settings.bootstrap_servers)), state)
        except NoModelError as exc:
            raise SystemExit(f"nomenclature worker: {exc}") from None
        worker = faust.Worker(app, loglevel=settings.log_level)
        worker.execute_from_commandline()
    finally:
        if broker is not None:
            broker.stop()


def cmd_predict(args: argparse.Namespace, settings: Settings) -> None:
    from models.batch_prediction import predict_csv
    from models.registry.model_registry import ModelRegistry

    with operator_errors():
        classifier = ModelRegistry(settings.models_dir).load(args.model)
        rows = predict_csv(Path(args.input), Path(args.output), classifier, explain=args.explain)
    print(f"{rows} rows classified with {classifier.version} -> {args.output}", file=sys.stderr)


def cmd_models(args: argparse.Namespace, settings: Settings) -> None:
    from models.registry.model_registry import ModelRegistry
    from tools import lifecycle_commands
    from tools import model_commands as commands

    registry = ModelRegistry(settings.models_dir)
    with operator_errors():
        if args.models_command == "list":
            text = commands.list_models(registry, args.json)
        elif args.models_command == "show":
            text = commands.show_model(registry, args.version, args.json, top=args.top)
        elif args.models_command in ("promote", "rollback"):
            before = registry.aliases()
            if args.models_command == "promote":
                text = commands.promote(registry, args.version, alias=args.alias)
            else:
                text = commands.rollback(registry)
            print(text)
            rolled_back = args.models_command == "rollback"
            text = lifecycle_commands.announce_change(settings, registry, before, rolled_back=rolled_back)
            if text:
                print(text, file=sys.stderr)
            return
        else:
            text = lifecycle_commands.announce_change(settings, registry, {}, force=True)
    print(text)


def cmd_drift(args: argparse.Namespace, settings: Settings) -> None:
    from models.registry.model_registry import ModelRegistry
    from tools import drift_commands

    if args.drift_command == "baseline":
        with operator_errors():
            text = drift_commands.rebuild_baseline(
                ModelRegistry(settings.models_dir), Path(args.source), args.model, args.bins
            )
        print(text)
        return
    url = args.url or f"http://{settings.web_host}:{settings.web_port}"
    try:
        body = drift_commands.fetch_status(url)
    except OSError as exc:
        raise SystemExit(f"nomenclature: no worker answers at {url}: {exc}") from None
    print(json.dumps(body, ensure_ascii=False, indent=2) if args.json else drift_commands.format_status(body))


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> None:
    from models.registry.model_registry import ModelRegistry
    from tools import model_commands as commands

    with operator_errors():
        text = commands.evaluate(
            ModelRegistry(settings.models_dir), Path(args.input), args.model, args.json, args.worst
        )
    print(text)


def cmd_produce(args: argparse.Namespace, settings: Settings) -> None:
    from aiokafka.errors import KafkaError

    from schemas import catalogue_from_url
    from tools.produce_commands import produce_files, source_options

    with operator_errors():
        options = source_options(
            args.topic, Path(args.mapping) if args.mapping else None, args.encoding, args.sheet
        )
        catalogue = catalogue_from_url(settings.schema_registry_url)
        try:
            report = produce_files(
                settings.bootstrap_servers,
                args.topic,
                [Path(p) for p in args.input],
                catalogue,
                options,
                rate=args.rate,
                dry_run=args.dry_run,
                partitions=settings.partitions,
                replication_factor=settings.replication_factor,
            )
        except KafkaError as exc:
            raise SystemExit(f"nomenclature: broker {settings.bootstrap_servers}: {exc}") from None
    print(json.dumps(report, ensure_ascii=False, indent=2))


def cmd_correct(args: argparse.Namespace, settings: Settings) -> None:
    from tools import lifecycle_commands

    with operator_errors():
        print(lifecycle_commands.correct(settings, args))


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> None:
    from tools import lifecycle_commands

    with operator_errors():
        print(lifecycle_commands.request_retrain(settings, args.reason, args.user))


def cmd_consume(args: argparse.Namespace, settings: Settings) -> None:
    from schemas import catalogue_from_url
    from streams.runtime.topic_reader import read_topic

    catalogue = catalogue_from_url(settings.schema_registry_url)

    async def dump() -> None:
        async for record in read_topic(
            settings.bootstrap_servers, args.topic, catalogue, limit=args.limit, follow=args.follow
        ):
            print(json.dumps(record, ensure_ascii=False, default=_json_default), flush=True)

    run_sync(dump())


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from tools.demo import run_demo

    run_demo(settings, SAMPLE_ITEMS, keep_running=args.serve)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def build_parser() -> argparse.ArgumentParser:
    from streams.topics import CLASSIFIED, RAW

    parser = argparse.ArgumentParser(prog="nomenclature", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run a broker in the foreground: the embedded Tansu, or Apache Kafka")
    p.add_argument("--port", type=int, help="default NOMENCLATURE_BROKER_PORT")
    p.add_argument(
        "--flavor",
        choices=["tansu", "kafka"],
        default="tansu",
        help="tansu: the embedded broker (in memory); kafka: Apache Kafka (KRaft) from `make kafka`'s jars",
    )
    p.add_argument("--data-dir", help="kafka: its log directory (kept and reused); default: temporary")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser(
        "worker", help="run a stream worker (starts the embedded broker if none is configured)"
    )
    p.add_argument(
        "--train-if-missing",
        action="store_true",
        help="if the registry has no model: register the shipped default one (or train one if it is stale)",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("train", help="train the MLP on a dataset (default: the bundled one) and register it")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        help="dataset directory (`dataset build` or `dataset scale` output; default: the bundled dataset, "
        "built under <NOMENCLATURE_DATA_DIR>/datasets if absent)",
    )
    source.add_argument("--data", help="a labelled CSV (name,label) instead; validation split by --seed")
    p.add_argument(
        "--validation-dataset",
        help="validation rows for a dataset without any (default for a scale set: the bundled dataset it "
        "was sampled from)",
    )
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="CSV|DIR",
        help="labelled name,label CSV (a directory: its *.csv) trained on beside the dataset, 15%% of its "
        "rows kept for validation; repeatable (e.g. --extra ../shared/data/train)",
    )
    p.add_argument("--features", help="feature store root (default: <NOMENCLATURE_DATA_DIR>/features)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-epochs", type=int, help="default 30")
    p.add_argument("--patience", type=int, help="epochs without improvement before stopping (default 4)")
    p.add_argument("--notes", default="")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("dataset", help="build training data (see models/datasets/data/DATASET.md)")
    dataset = p.add_subparsers(dest="dataset_command", required=True)
    p = dataset.add_parser(
        "build",
        help="build the train/validation set from the bundled ОКПД2 file or, with --input, one labelled "
        "dataset from export files",
    )
    p.add_argument(
        "--out", help="bundled dataset: output directory (default <NOMENCLATURE_DATA_DIR>/datasets/<version>)"
    )
    p.add_argument("--seed", type=int, help="bundled dataset: split seed (default 42)")
    p.add_argument(
        "--input",
        nargs="+",
        metavar="FILE|DIR",
        help="labelled exports (CSV, TSV, XLSX, Parquet, JSONL; directories read recursively) instead",
    )
    p.add_argument("--output", metavar="PARQUET", help="with --input: the dataset file (summary beside it)")
    p.add_argument("--csv", metavar="CSV", help="with --input: the same rows as UTF-8 CSV (for train --data)")
    p.add_argument("--mapping", metavar="JSON", help='with --input: {"Column": "schema_field" | null}')
    p.add_argument("--label-map", metavar="JSON", help='with --input: {"value": "product" | "service"}')
    p.add_argument("--encoding", help="with --input: text files' encoding (default: detected)")
    p.add_argument("--sheet", help="with --input: XLSX sheet name or number (default: the first)")
    p.set_defaults(func=cmd_dataset_build)
    p = dataset.add_parser("scale", help="write N perturbed training rows as parquet shards (benchmarks)")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--shard-rows", type=int, default=1_000_000)
    p.set_defaults(func=cmd_dataset_scale)

    p = sub.add_parser("predict", help="classify a CSV offline with the champion model")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--explain", action="store_true", help="add the words that drove each decision")
    p.add_argument("--model", default="champion", help="model version or alias")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="metrics of a model on a labelled CSV (name,label[,source,...])")
    p.add_argument("--input", required=True)
    p.add_argument("--model", default="champion", help="model version or alias")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--worst", type=int, default=10, help="wrong predictions listed, most confident first")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="the model registry: list, show, promote, rollback")
    p.set_defaults(func=cmd_models)
    models = p.add_subparsers(dest="models_command", required=True)
    p = models.add_parser("list", help="registered models, oldest first, with their aliases")
    p.add_argument("--json", action="store_true")
    p = models.add_parser("show", help="a model's record: metadata, metrics, training history")
    p.add_argument("version", help="model version or alias (champion, challenger)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--top", type=int, default=20, help="global-importance rows shown (0: all)")
    p = models.add_parser("promote", help="make a version the champion (or, with --as, the challenger)")
    p.add_argument("version", help="model version or alias")
    p.add_argument("--as", dest="alias", choices=("champion", "challenger"), default="champion")
    models.add_parser("rollback", help="make the previous champion the champion again")
    models.add_parser("announce", help="tell the workers (nomenclature.models) the registry's aliases")

    p = sub.add_parser("correct", help="publish a correction of an item's label to nomenclature.corrections")
    p.add_argument("--id", required=True, help="the item id")
    p.add_argument("--label", required=True, choices=("product", "service"), help="the correct label")
    p.add_argument("--name", help="the item's name (default: looked up in nomenclature.classified)")
    p.add_argument("--full-name", help="the item's full name (default: the name's, or the looked-up one)")
    p.add_argument(
        "--field", action="append", default=[], metavar="NAME=VALUE", help="a corrected field (repeat it)"
    )
    p.add_argument("--user", help="who corrects (default: $USER)")
    p.add_argument("--comment")
    p.set_defaults(func=cmd_correct)

    p = sub.add_parser("retrain", help="ask the retraining coordinator for a cycle now")
    p.add_argument("--reason", default="requested with `nomenclature retrain`")
    p.add_argument("--user", help="who asks (default: $USER)")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("drift", help="drift monitoring: rebuild a baseline, show a worker's drift status")
    p.set_defaults(func=cmd_drift)
    drift = p.add_subparsers(dest="drift_command", required=True)
    p = drift.add_parser("baseline", help="rebuild a model's drift baseline from reference rows")
    p.add_argument("--from", dest="source", required=True, help="CSV, TSV, JSONL or Parquet of items")
    p.add_argument("--model", default="champion", help="model version or alias")
    p.add_argument("--bins", type=int, default=10, help="quantile bins of numeric features")
    p = drift.add_parser("status", help="the worker's GET /drift as a table")
    p.add_argument("--url", help="worker web address (default: this machine's NOMENCLATURE_WEB_PORT)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "produce", help="publish the rows of CSV, TSV, XLSX, Parquet or JSONL exports as Avro records"
    )
    p.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="FILE|DIR",
        help="files, or directories whose files of those formats are read (recursively, sorted)",
    )
    p.add_argument("--topic", default=RAW, help=f"{RAW}[.<source>], or nomenclature.corrections")
    p.add_argument("--rate", type=float, help="records per second (default: as fast as possible)")
    p.add_argument(
        "--mapping",
        metavar="JSON",
        help='header overrides: {"Column in the file": "schema_field" | null (ignore it)}',
    )
    p.add_argument("--encoding", help="text files' encoding (default: detected; e.g. cp1251, cp866, utf-16)")
    p.add_argument("--sheet", help="XLSX sheet name or number from 1 (default: the first)")
    p.add_argument("--dry-run", action="store_true", help="read, map and report; send nothing")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("consume", help="print a topic's records, decoded, as JSON lines")
    p.add_argument("--topic", default=CLASSIFIED)
    p.add_argument("--limit", type=int)
    p.add_argument("--follow", action="store_true", help="keep waiting for new records")
    p.set_defaults(func=cmd_consume)

    from tools import offsets_commands, replay_commands, review_commands, sink_commands, tune_commands

    replay_commands.add_parser(sub)
    offsets_commands.add_parser(sub)
    sink_commands.add_parser(sub)
    review_commands.add_parser(sub)
    tune_commands.add_parser(sub)

    p = sub.add_parser("demo", help="embedded broker + worker + sample items; prints the results (make run)")
    p.add_argument("--serve", action="store_true", help="keep the worker running afterwards")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise SystemExit(f"nomenclature: bad setting: {exc}") from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    args.func(args, settings)


if __name__ == "__main__":
    main()
