"""`nomenclature tune`: a multi-objective Optuna study over the featurizer and the MLP (docs/tuning.md).

    nomenclature tune --trials N [--timeout S] [--study NAME] [--sample ROWS] [--epochs MIN-MAX] [--seed N]
                      [--cost-items N] [--cost-repeats N] [--no-progress]
    nomenclature tune --show [--study NAME] [--plot FILE.html|FILE.png] [--json]
    nomenclature tune --register-best [--study NAME] [--trial N] [--f1-tolerance POINTS] [--train-rows ROWS]

The study lives in ``<NOMENCLATURE_DATA_DIR>/tuning/<study>.sqlite3`` (Optuna's RDB storage), so a run
resumes where the last one stopped: ``--trials N`` runs trials until the study has N complete ones. Its
Pareto front goes to the registry (``<models dir>/tuning/<study>.json``) after every trial. What a trial
trains and measures is `models.tuning.search`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import re
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.training.progress import ProgressBar, format_duration
from streams.settings import Settings

if TYPE_CHECKING:
    import optuna

    from models.registry.model_registry import ModelRegistry
    from models.tuning.search import TuningData

DEFAULT_STUDY = "default"
DEFAULT_SAMPLE = 20_000  # training rows a trial trains on (≈10-60 s a trial on two cores)
DEFAULT_SEED = 42
DEFAULT_COST_ITEMS = 2_000
DEFAULT_COST_REPEATS = 3
DEFAULT_F1_TOLERANCE = 0.2  # points of macro-F1 below the front's best that --register-best accepts
STARTUP_TRIALS = 8  # random trials before TPE models the front
OBJECTIVES = ("macro_f1", "us_per_item")
DIRECTIONS = ("maximize", "minimize")
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # as the registry's tuning/<study>.json needs
_RUN_OPTIONS = ("timeout", "sample", "epochs", "seed", "cost_items", "cost_repeats", "no_progress")
_SHOW_OPTIONS = ("plot", "json")
_REGISTER_OPTIONS = ("trial", "f1_tolerance", "train_rows")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tune",
        help="search the featurizer's and the MLP's settings with Optuna (macro-F1 up, µs per item down)",
        description="A multi-objective Optuna study (TPE) over the featurizer's width, blocks and character "
        "n-grams and the MLP's alpha, learning rate, batch size and epochs (512-256-128 stays): macro-F1 "
        "on the selection half of the reference validation split up, scoring µs per item down. It lives "
        "in <NOMENCLATURE_DATA_DIR>/tuning/<study>.sqlite3 and resumes; its Pareto front goes to the "
        "registry. See docs/tuning.md.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="run trials until the study has N complete ones (a new study starts with today's settings)",
    )
    mode.add_argument("--show", action="store_true", help="the study's Pareto front as a table and a plot")
    mode.add_argument(
        "--register-best",
        action="store_true",
        help="train a front trial on all training rows, gate it against the champion, make it the "
        "challenger and announce it (the workers shadow it)",
    )
    p.add_argument("--study", default=DEFAULT_STUDY, help=f"study name (default {DEFAULT_STUDY!r})")
    run = p.add_argument_group("with --trials (a new study records them; a resumed one must not change them)")
    run.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    run.add_argument(
        "--sample",
        type=int,
        metavar="ROWS",
        help=f"training rows a trial trains on, a seeded sample (default {DEFAULT_SAMPLE:,}; 0: all)",
    )
    run.add_argument("--epochs", metavar="MIN-MAX", help="range of a trial's most epochs (default 2-10)")
    run.add_argument("--seed", type=int, help=f"sample, training and sampler seed (default {DEFAULT_SEED})")
    run.add_argument(
        "--cost-items",
        type=int,
        metavar="N",
        help=f"items the cost is timed on (default {DEFAULT_COST_ITEMS:,})",
    )
    run.add_argument(
        "--cost-repeats",
        type=int,
        metavar="N",
        help=f"timed passes, best kept (default {DEFAULT_COST_REPEATS})",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar (one line per trial stays)")
    show = p.add_argument_group("with --show")
    show.add_argument(
        "--plot",
        metavar="FILE",
        help="where the plot goes: .html (default <NOMENCLATURE_DATA_DIR>/tuning/<study>-front.html) or "
        ".png (needs the kaleido package)",
    )
    show.add_argument("--json", action="store_true", help="print the registry's document of the study")
    register = p.add_argument_group("with --register-best")
    register.add_argument("--trial", type=int, metavar="N", help="this trial (default: the rule below)")
    register.add_argument(
        "--f1-tolerance",
        type=float,
        metavar="POINTS",
        help="default choice: the fastest front trial within POINTS of the front's best macro-F1 "
        f"(default {DEFAULT_F1_TOLERANCE})",
    )
    register.add_argument(
        "--train-rows", type=int, metavar="ROWS", help="train on a seeded sample of ROWS (default: all rows)"
    )
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace, settings: Settings) -> None:
    from tools.common import operator_errors

    with operator_errors():
        _check_options(args)
        if args.show:
            print(show(settings, args.study, plot=Path(args.plot) if args.plot else None, as_json=args.json))
        elif args.register_best:
            tolerance = DEFAULT_F1_TOLERANCE if args.f1_tolerance is None else args.f1_tolerance
            print(
                register_best(
                    settings,
                    args.study,
                    trial=args.trial,
                    f1_tolerance=tolerance,
                    train_rows=args.train_rows,
                )
            )
        else:
            given = {
                "sample": args.sample,
                "seed": args.seed,
                "epochs": _epoch_range(args.epochs) if args.epochs else None,
                "cost_items": args.cost_items,
                "cost_repeats": args.cost_repeats,
            }
            try:
                run_study(
                    settings,
                    args.study,
                    args.trials,
                    timeout=args.timeout,
                    given=given,
                    progress=not args.no_progress,
                )
            except KeyboardInterrupt:
                raise SystemExit(
                    f"\nnomenclature tune: interrupted; the study {args.study!r} keeps its complete trials "
                    "and the registry its front: the same command resumes it"
                ) from None
            print(show(settings, args.study, plot=None, as_json=False))


def _check_options(args: argparse.Namespace) -> None:
    mode, allowed = (
        ("--show", _SHOW_OPTIONS)
        if args.show
        else ("--register-best", _REGISTER_OPTIONS)
        if args.register_best
        else ("--trials", _RUN_OPTIONS)
    )
    stray = [
        name
        for name in (*_RUN_OPTIONS, *_SHOW_OPTIONS, *_REGISTER_OPTIONS)
        if name not in allowed and getattr(args, name) not in (None, False)
    ]
    if stray:
        options = ", ".join("--" + name.replace("_", "-") for name in stray)
        raise ValueError(f"{options} cannot go with {mode}")
    if args.trials is not None and args.trials < 1:
        raise ValueError("--trials must be at least 1")


def _epoch_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        epochs = (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise ValueError(f"--epochs {text!r}: expected MIN-MAX, e.g. 2-10") from None
    if not 1 <= epochs[0] <= epochs[1]:
        raise ValueError(f"--epochs {text!r}: expected 1 <= MIN <= MAX")
    return epochs


# ---- the study ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyOptions:
    """What a study is created with and keeps: its trials compare only under the same ones."""

    sample: int  # training rows (0: all)
    seed: int
    epochs: tuple[int, int]
    cost_items: int
    cost_repeats: int

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> StudyOptions:
        return cls(
            sample=int(attrs["sample"]),
            seed=int(attrs["seed"]),
            epochs=(int(attrs["epochs"][0]), int(attrs["epochs"][1])),
            cost_items=int(attrs["cost_items"]),
            cost_repeats=int(attrs["cost_repeats"]),
        )

    def as_attrs(self) -> dict[str, Any]:
        return {**asdict(self), "epochs": list(self.epochs)}


def _new_options(given: Mapping[str, Any]) -> StudyOptions:
    def pick(name: str, default: Any) -> Any:
        return default if given.get(name) is None else given[name]

    options = StudyOptions(
        sample=int(pick("sample", DEFAULT_SAMPLE)),
        seed=int(pick("seed", DEFAULT_SEED)),
        epochs=tuple(pick("epochs", (2, 10))),  # type: ignore[arg-type]
        cost_items=int(pick("cost_items", DEFAULT_COST_ITEMS)),
        cost_repeats=int(pick("cost_repeats", DEFAULT_COST_REPEATS)),
    )
    if options.sample < 0 or options.cost_items < 1 or options.cost_repeats < 1:
        raise ValueError("--sample must be >= 0, --cost-items and --cost-repeats >= 1")
    return options


def study_path(settings: Settings, name: str) -> Path:
    if not _STUDY_NAME.fullmatch(name):
        raise ValueError(f"study name {name!r} is not usable as a file name (letters, digits, . _ -)")
    return settings.data_dir / "tuning" / f"{name}.sqlite3"


def _storage(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _sampler(seed: int, trials_so_far: int) -> optuna.samplers.BaseSampler:
    """Multi-objective TPE; reseeded by the trial count so a resumed run does not draw the first run's
    random trials again (the sampler's state is not stored)."""
    import optuna

    return optuna.samplers.TPESampler(
        multivariate=True, n_startup_trials=STARTUP_TRIALS, seed=seed + trials_so_far
    )


def load_study(settings: Settings, name: str) -> optuna.Study | None:
    """The stored study, or None if there is none."""
    import optuna

    _quiet_optuna()
    path = study_path(settings, name)
    if not path.is_file() or name not in optuna.study.get_all_study_names(_storage(path)):
        return None
    study = optuna.load_study(study_name=name, storage=_storage(path))
    return optuna.load_study(
        study_name=name,
        storage=_storage(path),
        sampler=_sampler(
            int(study.user_attrs.get("options", {}).get("seed", DEFAULT_SEED)), len(study.trials)
        ),
    )


def refuse_changed_featurizer(name: str, recorded: str, current: str) -> None:
    if recorded != current:
        raise ValueError(
            f"study {name!r} was started with other featurizer code (fingerprint {recorded[:12]}, the code "
            f"now {current[:12]}): its trials would not compare with new ones; start a new study with "
            "--study NEW_NAME"
        )


def _refuse_changed_data(name: str, recorded: Mapping[str, Any], data: TuningData) -> None:
    now = data.identity()
    if recorded != now:
        raise ValueError(
            f"study {name!r} was tuned on other data ({_data_text(recorded)}), the reference data now gives "
            f"{_data_text(now)}: its trials would not compare with new ones; start a new study with "
            "--study NEW_NAME"
        )


def _data_text(data: Mapping[str, Any]) -> str:
    return f"{data['reference']['version']}, {data['train_rows']:,} training rows, seed {data['seed']}"


def open_study(settings: Settings, name: str, given: Mapping[str, Any]) -> tuple[optuna.Study, bool]:
    """The study `name` (created with `given`'s options and the defaults if new; `given` options must be
    the stored ones if not) and whether it was created. A study started under other featurizer code is
    refused (ValueError)."""
    import optuna

    from models.tuning import search as tuning

    study = load_study(settings, name)
    fingerprint = tuning.featurizer_fingerprint()
    if study is not None:
        if not {"featurizer_fingerprint", "options", "cost"} <= set(study.user_attrs):
            raise ValueError(
                f"study {name!r} was not fully created (its run stopped at once): delete "
                f"{study_path(settings, name)} and start it again"
            )
        refuse_changed_featurizer(name, study.user_attrs["featurizer_fingerprint"], fingerprint)
        stored = StudyOptions.from_attrs(study.user_attrs["options"])
        differing = [
            f"--{key.replace('_', '-')} {_option_text(getattr(stored, key))} (not {_option_text(value)})"
            for key, value in given.items()
            if value is not None and tuple_or(value) != tuple_or(getattr(stored, key))
        ]
        if differing:
            raise ValueError(
                f"study {name!r} was created with {', '.join(differing)}: a resumed study keeps its options "
                "(leave them out, or start a new study with --study NEW_NAME)"
            )
        return study, False
    options = _new_options(given)
    path = study_path(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=_storage(path),
        study_name=name,
        directions=list(DIRECTIONS),
        sampler=_sampler(options.seed, 0),
    )
    study.set_metric_names(list(OBJECTIVES))
    cost = tuning.CostSettings(
        batch_size=settings.batch_size,
        top_k=settings.top_k,
        explain=settings.explain_tokens,
        repeats=options.cost_repeats,
    )
    attrs = {
        "featurizer_fingerprint": fingerprint,
        "options": options.as_attrs(),
        "cost": {**asdict(cost), "items": options.cost_items, "blas_threads": 1, "clock": "process CPU time"},
        "search_space": tuning.search_space(options.epochs),
        "sampler": f"TPESampler(multivariate=True, n_startup_trials={STARTUP_TRIALS}, seed={options.seed} "
        "+ trials so far)",
        "created_at": _now(),
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    study.enqueue_trial(tuning.default_params(options.epochs), user_attrs={"defaults": True})
    return study, True


def tuple_or(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _option_text(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


@contextlib.contextmanager
def _exclusive(settings: Settings, name: str) -> Iterator[None]:
    """One tuning run per study at a time (another is refused, not waited for)."""
    lock = settings.data_dir / "tuning" / f".{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"study {name!r} is being tuned by another process ({lock} is locked)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def reference_dataset(settings: Settings) -> Path:
    """The reference dataset, as retraining takes it: NOMENCLATURE_REFERENCE_DATASET or the bundled one."""
    from models.training.train import bundled_dataset

    return Path(settings.reference_dataset or bundled_dataset(settings.data_dir / "datasets"))


def run_study(
    settings: Settings,
    name: str,
    trials: int,
    *,
    timeout: float | None = None,
    given: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> optuna.Study:
    """Run trials until the study has `trials` complete ones (or `timeout` seconds pass: no trial starts
    after it), writing the Pareto front to the registry after each."""
    import optuna

    from models.registry.model_registry import ModelRegistry
    from models.tuning import search as tuning

    registry = ModelRegistry(settings.models_dir)
    with _exclusive(settings, name):
        study, created = open_study(settings, name, given or {})
        for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # left by a killed run
        options = StudyOptions.from_attrs(study.user_attrs["options"])
        data = tuning.prepare_data(
            reference_dataset(settings),
            settings.data_dir / "tuning" / "datasets",
            train_rows=options.sample or None,
            seed=options.seed,
        )
        if "data" in study.user_attrs:
            _refuse_changed_data(name, study.user_attrs["data"], data)
        else:  # new (or created by a run that stopped right after)
            study.set_user_attr("data", data.identity())
        cost_attrs = dict(study.user_attrs["cost"])
        cost = tuning.CostSettings(
            **{k: cost_attrs[k] for k in ("batch_size", "top_k", "explain", "repeats")}
        )
        items = tuning.cost_items(data, int(cost_attrs["items"]), options.seed)
        feature_root = settings.data_dir / "features"
        done = _complete(study)
        remaining = trials - len(done)
        print(
            f"study {name!r} ({'new' if created else 'resumed'}, {study_path(settings, name)}): "
            f"{len(done)} complete trials, running {max(remaining, 0)} more on {data.train_rows:,} training "
            f"rows, objective on {data.selection_rows:,} selection rows",
            file=sys.stderr,
            flush=True,
        )
        saved = save_front(registry, study, settings)
        if remaining <= 0:
            return study
        bar = TrialBar(remaining, name, timeout=timeout, enabled=progress, front=_front_text(saved["front"]))

        def objective(trial: optuna.Trial) -> tuple[float, float]:
            config = tuning.suggest(trial, options.epochs)
            result = tuning.run_trial(config, data, feature_root, items, seed=options.seed, cost=cost)
            for key, value in result.attrs().items():
                trial.set_user_attr(key, value)
            return result.macro_f1, result.us_per_item

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            document = save_front(registry, study, settings)
            bar.front = _front_text(document["front"])
            bar.note(_trial_line(trial))
            bar.update(1)

        try:
            study.optimize(
                objective, n_trials=remaining, timeout=timeout, callbacks=[after_trial], gc_after_trial=True
            )
        finally:
            bar.close()
            save_front(registry, study, settings)
    return study


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _trial_line(trial: optuna.trial.FrozenTrial) -> str:
    if trial.values is None:
        return f"trial {trial.number}: {trial.state.name.lower()}"
    f1, us = trial.values
    attrs = trial.user_attrs
    seconds = sum(float(attrs.get(k, 0.0)) for k in ("featurize_seconds", "fit_seconds", "cost_seconds"))
    return (
        f"trial {trial.number}: macro-F1 {f1:.4f}, {us:,.0f} µs/item  ({_params_text(trial.params)}; "
        f"best epoch {attrs.get('best_epoch')}/{attrs.get('epochs_run')}, {seconds:.0f} s)"
    )


def _params_text(params: Mapping[str, Any]) -> str:
    return (
        f"{2 ** int(params['features_log2'])} columns, morphology {'on' if params['morphology'] else 'off'}, "
        f"embeddings {'on' if params['embeddings'] else 'off'}, n-grams {params['char_ngrams']}, "
        f"alpha {params['alpha']:.1e}, lr {params['learning_rate_init']:.1e}, batch {params['batch_size']}, "
        f"at most {params['max_epochs']} epoch{'s' if int(params['max_epochs']) != 1 else ''}"
    )


def _front_text(front: Sequence[Mapping[str, Any]]) -> str:
    if not front:
        return "front: none yet"
    best = max(front, key=lambda t: t["macro_f1"])
    fastest = min(front, key=lambda t: t["us_per_item"])
    return (
        f"front {len(front)}: best macro-F1 {best['macro_f1']:.4f} (#{best['trial']}), "
        f"fastest {fastest['us_per_item']:,.0f} µs/item (#{fastest['trial']})"
    )


class TrialBar(ProgressBar):
    """Trials done of those asked, the front's best values and the ETA (mean trial time, and the timeout)."""

    def __init__(
        self, total: int, study: str, *, timeout: float | None, enabled: bool, front: str = "front: none yet"
    ) -> None:
        super().__init__(total, f"tune {study}", unit="trials", enabled=enabled, log_interval=0.0)
        self.timeout = timeout
        self.front = front
        if enabled:
            self._draw()

    def eta_seconds(self) -> float | None:
        elapsed = time.perf_counter() - self.started
        if not self.done:
            return self.timeout
        eta = elapsed / self.done * (self.total - self.done)
        return min(eta, max(self.timeout - elapsed, 0.0)) if self.timeout is not None else eta

    def line(self) -> str:
        fraction = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = int(fraction * self.width)
        eta = self.eta_seconds()
        return (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} trials  "
            f"{self.front}  elapsed {format_duration(time.perf_counter() - self.started)}  "
            f"ETA {format_duration(eta) if eta is not None else '?'}"
        )

    def close(self) -> None:
        """End the bar's line on a terminal (in a log, every trial drew its line already)."""
        if self.enabled and self._tty:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        """A line above the bar (a trial's result), also when the bar is off."""
        self.stream.write(("\r\033[K" if self._tty and self.enabled else "") + text + "\n")
        self.stream.flush()


# ---- the front in the registry ------------------------------------------------------------------------


def front_document(study: optuna.Study, settings: Settings) -> dict[str, Any]:
    """The registry's record of a study: its settings and data, trial counts and the Pareto front (each
    front trial's number, parameters, what they stand for, both objectives and its measurements)."""
    import optuna

    from models.tuning.search import TrialConfig

    states = [t.state for t in study.get_trials(deepcopy=False)]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    front = sorted(study.best_trials if complete else [], key=lambda t: (t.values[1], -t.values[0], t.number))
    attrs = study.user_attrs
    return {
        "study": study.study_name,
        "storage": str(study_path(settings, study.study_name).resolve()),
        "objectives": dict(zip(OBJECTIVES, DIRECTIONS, strict=True)),
        "featurizer_fingerprint": attrs["featurizer_fingerprint"],
        "options": attrs["options"],
        "cost": attrs["cost"],
        "data": attrs.get("data"),
        "search_space": attrs["search_space"],
        "sampler": attrs["sampler"],
        "created_at": attrs["created_at"],
        "updated_at": _now(),
        "trials": {
            "complete": complete,
            "failed": states.count(optuna.trial.TrialState.FAIL),
            "total": len(states),
        },
        "front": [
            {
                "trial": t.number,
                "params": t.params,
                "config": TrialConfig.from_params(t.params).describe(),
                "macro_f1": t.values[0],
                "us_per_item": t.values[1],
                "defaults": bool(t.user_attrs.get("defaults")),
                "measurements": {k: v for k, v in t.user_attrs.items() if k != "defaults"},
                "started_at": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
                "completed_at": (
                    t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None
                ),
            }
            for t in front
        ],
    }


def save_front(registry: ModelRegistry, study: optuna.Study, settings: Settings) -> dict[str, Any]:
    """Write the study's document to the registry (keeping what `--register-best` recorded there)."""
    document = front_document(study, settings)
    return registry.update_tuning(
        study.study_name, lambda old: {**document, "registered": (old or {}).get("registered", [])}
    )


# ---- --show ---------------------------------------------------------------------------------------------


def show(settings: Settings, name: str, *, plot: Path | None, as_json: bool) -> str:
    """The registry's front of a study as a table (or JSON) and, unless JSON without --plot, a plot."""
    from models.registry.model_registry import ModelRegistry
    from models.tuning.search import choose_trial, featurizer_fingerprint

    registry = ModelRegistry(settings.models_dir)
    document = registry.tuning(name)
    if document is None:
        known = registry.tuning_studies()
        raise ValueError(
            f"the registry at {settings.models_dir} has no tuning study {name!r}"
            + (f" (it has {', '.join(known)})" if known else "; `nomenclature tune --trials N` starts one")
        )
    lines: list[str] = []
    if as_json:
        lines.append(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        front = document["front"]
        pick = choose_trial(front, DEFAULT_F1_TOLERANCE)["trial"] if front else None
        lines.append(front_table(document, pick))
        if document["featurizer_fingerprint"] != featurizer_fingerprint():
            lines.append(
                "note: the featurizer code changed since this study started: its trials cannot be resumed "
                "or registered (start a new study)"
            )
    if plot is not None or not as_json:
        front = document["front"]
        path = write_plot(
            document,
            _all_points(settings, name),
            plot or settings.data_dir / "tuning" / f"{name}-front.html",
            pick=choose_trial(front, DEFAULT_F1_TOLERANCE)["trial"] if front else None,
        )
        if as_json:
            print(f"plot: {path}", file=sys.stderr)
        else:
            lines.append(f"plot: {path}")
    return "\n".join(lines)


def front_table(document: Mapping[str, Any], pick: int | None = None) -> str:
    """The front as a text table, fastest first; `pick` is marked (the default `--register-best` choice)."""
    trials, data, options = document["trials"], document.get("data") or {}, document["options"]
    head = (
        f"study {document['study']!r}: {trials['complete']} complete trials ({trials['failed']} failed), "
        f"Pareto front of {len(document['front'])}; featurizer code {document['featurizer_fingerprint'][:12]}"
    )
    if data:
        head += (
            f"\ndata: {data['reference']['version']}, {data['train_rows']:,} training rows (seed "
            f"{data['seed']}), macro-F1 on {data['selection_rows']:,} selection rows"
        )
    cost = document["cost"]
    head += (
        f"\ncost: CPU µs per item to featurize, score and explain {cost['items']:,} items in batches of "
        f"{cost['batch_size']} (top {cost['top_k']}, {cost['explain']} explanation parts), best of "
        f"{cost['repeats']}; epochs {options['epochs'][0]}-{options['epochs'][1]}"
    )
    columns = ("trial", "macro-F1", "µs/item", "columns", "morph", "emb", "n-grams", "alpha", "lr", "batch",
               "epochs")  # fmt: skip
    rows = []
    for t in document["front"]:
        p, m = t["params"], t["measurements"]
        mark = ("*" if t["trial"] == pick else "") + (" (defaults)" if t.get("defaults") else "")
        rows.append(
            (
                f"{t['trial']}{mark}",
                f"{t['macro_f1']:.4f}",
                f"{t['us_per_item']:,.0f}",
                f"{2 ** int(p['features_log2'])}",
                "on" if p["morphology"] else "off",
                "on" if p["embeddings"] else "off",
                str(p["char_ngrams"]),
                f"{p['alpha']:.1e}",
                f"{p['learning_rate_init']:.1e}",
                str(p["batch_size"]),
                f"{m.get('best_epoch')}/{m.get('epochs_run')} of ≤{p['max_epochs']}",
            )
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    table = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    table += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    foot = []
    if pick is not None:
        foot.append(
            f"* --register-best's default: the fastest front trial within {DEFAULT_F1_TOLERANCE} points of "
            "the best macro-F1 (--trial N picks another)"
        )
    for entry in document.get("registered", []):
        foot.append(f"registered: trial {entry['trial']} as {entry['version']} ({entry['at']})")
    return "\n".join([head, "", *table, *(["", *foot] if foot else [])])


def _all_points(settings: Settings, name: str) -> list[Point] | None:
    """Every complete trial, when the study's database is here."""
    study = load_study(settings, name)
    if study is None:
        return None
    return [
        Point(t.number, t.values[0], t.values[1], bool(t.user_attrs.get("defaults")))
        for t in _complete(study)
    ]


@dataclass(frozen=True)
class Point:
    trial: int
    macro_f1: float
    us_per_item: float
    defaults: bool = False


def write_plot(
    document: Mapping[str, Any],
    points: Sequence[Point] | None,
    path: Path,
    pick: int | None = None,
) -> Path:
    """The front (and, given, every complete trial, today's settings marked) as a plotly scatter, with the
    default `--register-best` pick marked: HTML (self-contained) or PNG. The macro-F1 axis spans the front
    and the trials near it; trials far below (a run that learnt nothing) are left out of view."""
    import plotly.graph_objects as go

    front = document["front"]
    figure = go.Figure()
    hover = "%{text}<br>%{x:,.0f} µs/item<br>macro-F1 %{y:.4f}"
    if points:
        figure.add_trace(
            go.Scatter(
                x=[p.us_per_item for p in points],
                y=[p.macro_f1 for p in points],
                mode="markers",
                name="trials",
                marker={"color": "lightgray", "size": 8},
                text=[f"trial {p.trial}" for p in points],
                hovertemplate=hover + "<extra></extra>",
            )
        )
        for p in points:
            if p.defaults:
                figure.add_trace(
                    go.Scatter(
                        x=[p.us_per_item],
                        y=[p.macro_f1],
                        mode="markers",
                        name=f"today's settings (#{p.trial})",
                        marker={"symbol": "diamond", "size": 12, "color": "royalblue"},
                        text=[f"trial {p.trial}: today's settings"],
                        hovertemplate=hover + "<extra></extra>",
                    )
                )
    figure.add_trace(
        go.Scatter(
            x=[t["us_per_item"] for t in front],
            y=[t["macro_f1"] for t in front],
            mode="lines+markers",
            name="Pareto front",
            line={"shape": "hv"},
            marker={"size": 11},
            text=[f"trial {t['trial']}" for t in front],
            customdata=[_params_text(t["params"]) for t in front],
            hovertemplate=hover + "<br>%{customdata}<extra></extra>",
        )
    )
    for t in front:
        if t["trial"] == pick:
            figure.add_trace(
                go.Scatter(
                    x=[t["us_per_item"]],
                    y=[t["macro_f1"]],
                    mode="markers",
                    name=f"--register-best's default (#{t['trial']})",
                    marker={"symbol": "star", "size": 18, "color": "gold", "line": {"width": 1}},
                    text=[f"trial {t['trial']}"],
                    customdata=[_params_text(t["params"])],
                    hovertemplate=hover + "<br>%{customdata}<extra></extra>",
                )
            )
    if front:
        f1s = [t["macro_f1"] for t in front]
        low, high = min(f1s), max(f1s)
        margin = max(high - low, 0.005)
        figure.update_yaxes(range=[low - margin, min(high + margin / 3, 1.0 + margin / 10)])
    figure.update_layout(
        title=f"nomenclature tune: study {document['study']!r}, {document['trials']['complete']} trials",
        xaxis_title="scoring cost, CPU µs per item (lower is better)",
        yaxis_title="macro-F1, selection half of the validation split (higher is better)",
        template="plotly_white",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        try:
            figure.write_image(str(path))
        except (ImportError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"a PNG plot needs the kaleido package ({exc}); write --plot FILE.html"
            ) from None
    elif path.suffix.lower() in (".html", ".htm"):
        figure.write_html(str(path), include_plotlyjs=True)
    else:
        raise ValueError(f"--plot {path}: write a .html or a .png file")
    return path


# ---- --register-best ------------------------------------------------------------------------------------


def register_best(
    settings: Settings,
    name: str,
    *,
    trial: int | None = None,
    f1_tolerance: float = DEFAULT_F1_TOLERANCE,
    train_rows: int | None = None,
    progress: bool = True,
) -> str:
    """Train a trial of the study's front (`trial`, or the default rule) on the reference training rows,
    gate it against the champion on the reference holdout, register it, make it the challenger and announce
    it; returns the report."""
    from models.registry.model_registry import CHALLENGER, CHAMPION, ModelRegistry
    from models.training.train import registry_data
    from models.tuning import search as tuning
    from tools.lifecycle_commands import announce_change

    registry = ModelRegistry(settings.models_dir)
    document = registry.tuning(name)
    if document is None:
        raise ValueError(
            f"the registry has no tuning study {name!r}: run `nomenclature tune --trials N` first"
        )
    refuse_changed_featurizer(name, document["featurizer_fingerprint"], tuning.featurizer_fingerprint())
    if registry.champion() is None:
        raise ValueError(
            "the registry has no champion to gate a challenger against: `nomenclature train` (or a worker's "
            "--train-if-missing) makes one"
        )
    entry = _chosen(settings, name, document, trial, f1_tolerance)
    config = tuning.TrialConfig.from_params(entry["params"])
    reference = reference_dataset(settings)
    seed = int(document["options"]["seed"])
    data = tuning.prepare_data(
        reference, settings.data_dir / "tuning" / "datasets", train_rows=train_rows, seed=seed
    )
    recorded = document.get("data") or {}
    if recorded.get("reference") != data.identity()["reference"]:
        was = recorded.get("reference", {}).get("version")
        raise ValueError(
            f"study {name!r} was tuned on {was}, the reference dataset is now {data.reference_version}: "
            "its trials do not describe it; start a new study"
        )
    print(
        f"training trial {entry['trial']} of study {name!r} on {data.train_rows:,} training rows "
        f"({_params_text(entry['params'])})",
        file=sys.stderr,
        flush=True,
    )
    classifier, metrics = tuning.train_tuned(
        config, data, settings.data_dir / "features", seed=seed, progress=progress
    )
    champion = registry.load(registry.get(CHAMPION).version)
    gate = tuning.holdout_gate(champion, classifier, reference, delta_points=settings.gate_delta_points)
    metrics["gate"] = gate
    metrics["tuning"] = {
        "study": name,
        "trial": entry["trial"],
        "params": entry["params"],
        "config": entry["config"],
        "objectives": {"macro_f1": entry["macro_f1"], "us_per_item": entry["us_per_item"]},
        "featurizer_fingerprint": document["featurizer_fingerprint"],
        "chosen_by": entry["chosen_by"],
    }
    data_sha256, data_rows = registry_data(metrics)
    before = registry.aliases()
    record = registry.register(
        classifier,
        metrics,
        data.train,
        notes=f"tuned: study {name} trial {entry['trial']}",
        data_sha256=data_sha256,
        data_rows=data_rows,
    )
    registry.set_alias(CHALLENGER, record.version)
    announced = announce_change(settings, registry, before)
    registered = {"trial": entry["trial"], "version": record.version, "at": _now(), "gate": gate["eligible"]}
    registry.update_tuning(
        name, lambda old: {**(old or {}), "registered": [*(old or {}).get("registered", []), registered]}
    )
    lines = [
        f"registered {record.version} (trial {entry['trial']} of study {name!r}, {entry['chosen_by']}) as "
        f"the challenger; champion {champion.version}",
        f"validation (selection half) macro-F1 {metrics['macro_f1']:.4f}; best epoch {metrics['best_epoch']} "
        f"of {metrics['epochs_run']}, trained in {metrics['train_seconds']:.0f} s",
        f"gate: {'eligible' if gate['eligible'] else 'NOT eligible'}",
        *(f"  - {reason}" for reason in gate["reasons"]),
        announced or "nothing to announce",
        "the workers shadow it and the retraining coordinator judges it like its own challengers "
        "(GET /models); `nomenclature models promote challenger` promotes it by hand",
    ]
    return "\n".join(lines)


def _chosen(
    settings: Settings, name: str, document: Mapping[str, Any], trial: int | None, tolerance: float
) -> dict[str, Any]:
    """The front entry of `trial` (any complete trial of the study's database, if it is not on the front),
    or the default rule's pick; with how it was chosen."""
    from models.tuning.search import TrialConfig, choose_trial

    front = document["front"]
    if trial is None:
        entry = dict(choose_trial(front, tolerance))
        entry["chosen_by"] = f"the fastest front trial within {tolerance} points of the best macro-F1"
        return entry
    for candidate in front:
        if candidate["trial"] == trial:
            return {**candidate, "chosen_by": "--trial"}
    study = load_study(settings, name)
    found = [t for t in _complete(study) if t.number == trial] if study is not None else []
    if not found:
        on_front = ", ".join(str(t["trial"]) for t in front)
        raise ValueError(f"study {name!r} has no complete trial {trial} (the front: {on_front})")
    t = found[0]
    return {
        "trial": t.number,
        "params": t.params,
        "config": TrialConfig.from_params(t.params).describe(),
        "macro_f1": t.values[0],
        "us_per_item": t.values[1],
        "chosen_by": "--trial (not on the front)",
    }
