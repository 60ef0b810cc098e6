"""Every setting of the service, in one typed place.

Values come from environment variables: ``NOMENCLATURE_*`` plus the standard
``KAFKA_BOOTSTRAP_SERVERS`` and ``SCHEMA_REGISTRY_URL``. The README lists them all;
``tests/test_settings.py`` checks that the README, this file and docker-compose.yml agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ENV_PREFIX = "NOMENCLATURE_"


def _env(name: str, default: str | None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Settings:
    """Service settings. ``Settings.from_env()`` reads them; the field metadata names the variable."""

    kafka_bootstrap_servers: str | None = field(
        default=None,
        metadata={
            "env": "KAFKA_BOOTSTRAP_SERVERS",
            "doc": "Kafka bootstrap servers; "
            "unset = the embedded Tansu broker on 127.0.0.1:NOMENCLATURE_BROKER_PORT.",
        },
    )
    schema_registry_url: str | None = field(
        default=None,
        metadata={
            "env": "SCHEMA_REGISTRY_URL",
            "doc": "Confluent-compatible schema registry; unset = the local catalogue in schemas/.",
        },
    )
    data_dir: Path = field(
        default=Path(".nomenclature"), metadata={"doc": "All local state: RocksDB tables, models, registry."}
    )
    models_path: Path | None = field(
        default=None,
        metadata={
            "env": "NOMENCLATURE_MODELS_DIR",
            "doc": "Model registry, artifacts and the corrections log, shared by every worker of the app; "
            "unset = <NOMENCLATURE_DATA_DIR>/models.",
        },
    )
    app_id: str = field(default="nomenclature", metadata={"doc": "Faust app id (= consumer group id)."})
    broker_port: int = field(default=19092, metadata={"doc": "Port of the embedded broker."})
    broker_flavor: str = field(
        default="auto",
        metadata={
            "doc": "auto | kafka | tansu: which broker workarounds to apply "
            "(auto = tansu for the embedded broker or one with Tansu's cluster id, kafka otherwise)."
        },
    )
    broker_wait_seconds: int = field(
        default=300,
        metadata={
            "doc": "How long a starting worker waits for an unreachable broker (retrying with backoff) "
            "before it gives up; 0 = forever."
        },
    )
    web_host: str = field(default="127.0.0.1", metadata={"doc": "Bind address of the worker's web server."})
    web_port: int = field(default=6066, metadata={"doc": "Port of the worker's web server."})
    admin_token: str | None = field(
        default=None,
        repr=False,  # a secret: never in a log line or a repr
        metadata={
            "doc": "Bearer token that state-changing endpoints (POST /corrections, POST /retrain) require; "
            "unset (and no admin user) = they answer only when the web server binds a loopback address."
        },
    )
    admin_user: str | None = field(
        default=None,
        metadata={
            "doc": "HTTP Basic user that state-changing endpoints accept (with NOMENCLATURE_ADMIN_PASSWORD)."
        },
    )
    admin_password: str | None = field(
        default=None,
        repr=False,
        metadata={"doc": "HTTP Basic password of NOMENCLATURE_ADMIN_USER."},
    )
    predict_max_items: int = field(
        default=1000, metadata={"doc": "POST /predict: most items in one request (more = 413)."}
    )
    predict_max_bytes: int = field(
        default=1_048_576, metadata={"doc": "POST /predict: largest request body in bytes (larger = 413)."}
    )
    predict_queue_size: int = field(
        default=64,
        metadata={"doc": "POST /predict: requests that may wait for scoring; when full the answer is 429."},
    )
    predict_workers: int = field(
        default=1, metadata={"doc": "POST /predict: requests scored at the same time (the fixed pool)."}
    )
    predict_share: float = field(
        default=0.5,
        metadata={
            "doc": "POST /predict: most share of scoring time it may take while the stream has items "
            "waiting (the rest is reserved for the stream)."
        },
    )
    review_threshold: float = field(
        default=0.7,
        metadata={
            "doc": "Review queue: items whose calibrated confidence is below this go to nomenclature.review "
            "(as do items the champion and the challenger label differently); 0 = only disagreements."
        },
    )
    review_max_per_hour: int = field(
        default=120,
        metadata={
            "doc": "Review queue: most items queued per hour across the workers (least certain first); "
            "0 turns the queue off."
        },
    )
    review_votes: int = field(
        default=1,
        metadata={
            "doc": "Review queue: distinct reviewers who answer an item before it leaves the queue "
            "(2 or more measures their agreement, Cohen's kappa, on every item)."
        },
    )
    dashboard_refresh_seconds: float = field(
        default=5.0,
        metadata={"doc": "GET /dashboard: seconds between refreshes and between history samples."},
    )
    partitions: int = field(default=8, metadata={"doc": "Partitions of the topics created at start-up."})
    replication_factor: int = field(default=1, metadata={"doc": "Replication factor of created topics."})
    scoring_processes: int = field(
        default=1, metadata={"doc": "Processes that score micro-batches (0 = a thread of the worker)."}
    )
    batch_size: int = field(default=1000, metadata={"doc": "Max items per micro-batch."})
    batch_within_ms: int = field(default=20, metadata={"doc": "Max wait to fill a micro-batch (ms)."})
    session_timeout_seconds: float | None = field(
        default=None,
        metadata={
            "doc": "Consumer-group session timeout: how long the partitions of a worker that stopped "
            "heartbeating (killed, frozen) wait before the other workers take them; unset = 6 on Tansu, "
            "Faust's 60 elsewhere (Apache Kafka accepts 6 to 1800 by default)."
        },
    )
    topic_discovery_seconds: int = field(
        default=30, metadata={"doc": "How often the worker looks for raw topics created after it started."}
    )
    max_name_length: int = field(default=1000, metadata={"doc": "Max characters in name."})
    max_full_name_length: int = field(default=4000, metadata={"doc": "Max characters in full_name."})
    top_k: int = field(default=2, metadata={"doc": "Classes listed in top_k."})
    explain_tokens: int = field(default=3, metadata={"doc": "Tokens listed in explanation."})
    dead_letter_max_bytes: int = field(
        default=262144,
        metadata={"doc": "Original value bytes kept in a dead letter (longer ones are cut, noted)."},
    )
    log_level: str = field(default="info", metadata={"doc": "Worker log level."})
    drift_window_seconds: int = field(
        default=300, metadata={"doc": "Drift: tumbling event-time window (seconds of record timestamps)."}
    )
    drift_hopping_windows: int = field(
        default=12,
        metadata={"doc": "Drift: the hopping view spans this many tumbling windows, advancing by one."},
    )
    drift_min_samples: int = field(
        default=200, metadata={"doc": "Drift: no metric is judged on a window with fewer items."}
    )
    drift_psi_threshold: float = field(default=0.2, metadata={"doc": "Drift: PSI alert threshold."})
    drift_js_threshold: float = field(
        default=0.3, metadata={"doc": "Drift: Jensen–Shannon distance (base 2) alert threshold."}
    )
    drift_alpha: float = field(
        default=0.001,
        metadata={"doc": "Drift: a window also needs a G-test p-value below this to count as drifted."},
    )
    drift_persistence: int = field(
        default=1,
        metadata={
            "doc": "Drift: an episode starts when this many of the last "
            "NOMENCLATURE_DRIFT_PERSISTENCE_WINDOWS judged windows are drifted."
        },
    )
    drift_persistence_windows: int = field(
        default=1, metadata={"doc": "Drift: the n of the k-of-n persistence rule."}
    )
    drift_clear_windows: int = field(
        default=2,
        metadata={
            "doc": "Drift: an episode ends after this many judged windows in a row under "
            "0.8 × the threshold (hysteresis)."
        },
    )
    drift_grace_seconds: int = field(
        default=10, metadata={"doc": "Drift: how late (event time) an item may be and still be counted."}
    )
    drift_idle_seconds: int = field(
        default=30,
        metadata={
            "doc": "Drift: a partition whose stream time has not advanced for this long (wall clock) "
            "no longer holds windows open."
        },
    )
    drift_report_seconds: float = field(
        default=2.0, metadata={"doc": "Drift: how often workers send their window counts to be merged."}
    )

    reference_dataset: Path | None = field(
        default=None,
        metadata={
            "doc": "Retraining: the reference dataset directory (`nomenclature dataset build`); "
            "unset = the bundled dataset, built under <NOMENCLATURE_DATA_DIR>/datasets."
        },
    )
    retrain_min_corrections: int = field(
        default=100, metadata={"doc": "Retraining: new corrections that start a cycle (0 = never on count)."}
    )
    retrain_interval_seconds: int = field(
        default=86400,
        metadata={"doc": "Retraining: a cycle at least this often when there are new corrections (0 = off)."},
    )
    retrain_on_drift: bool = field(
        default=True,
        metadata={"doc": "Retraining: a firing drift alert starts a cycle when there are new corrections."},
    )
    auto_promote: bool = field(
        default=True,
        metadata={
            "doc": "Promote a challenger automatically when the gate holds and shadow evaluation is "
            "significant."
        },
    )
    gate_delta_points: float = field(
        default=0.5,
        metadata={"doc": "Gate: the most macro-F1 points a challenger may lose on the reference holdout."},
    )
    retrain_reference_rows: int = field(
        default=20000,
        metadata={"doc": "Retraining: the least reference rows (a class-balanced sample) to train on."},
    )
    retrain_reference_share: float = field(
        default=0.1, metadata={"doc": "Retraining: the least share of reference rows in the training rows."}
    )
    retrain_holdback: float = field(
        default=0.2, metadata={"doc": "Retraining: share of new corrections held back for the gate."}
    )
    retrain_max_epochs: int = field(default=10, metadata={"doc": "Retraining: most warm-start epochs."})
    shadow_min_items: int = field(
        default=200,
        metadata={"doc": "Shadow: items scored by both models before an automatic promotion is considered."},
    )
    shadow_alpha: float = field(
        default=0.05,
        metadata={
            "doc": "Shadow: promotion needs the exact McNemar test on corrected shadowed items to give "
            "p below this, in the challenger's favour."
        },
    )
    shadow_max_seconds: int = field(
        default=86400,
        metadata={
            "doc": "Shadow: automatic retraining triggers wait at most this long while a challenger is "
            "in shadow."
        },
    )

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {}
        for f in fields(cls):
            env = f.metadata.get("env", ENV_PREFIX + f.name.upper())
            raw = _env(env, None)
            if raw is None:
                continue
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            try:
                if kind.startswith("int"):
                    values[f.name] = int(raw)
                elif kind.startswith("float"):
                    values[f.name] = float(raw)
                elif kind.startswith("bool"):
                    values[f.name] = _bool(raw)
                elif kind.startswith("Path"):
                    values[f.name] = Path(raw)
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise ValueError(f"{env}={raw!r}: {exc}") from None
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.broker_flavor not in {"auto", "kafka", "tansu"}:
            raise ValueError(
                f"NOMENCLATURE_BROKER_FLAVOR must be auto, kafka or tansu, not {settings.broker_flavor!r}"
            )
        if not 0 <= settings.review_threshold <= 1:
            raise ValueError(
                f"NOMENCLATURE_REVIEW_THRESHOLD must be in [0, 1], not {settings.review_threshold!r}"
            )
        if settings.review_max_per_hour < 0 or settings.review_votes < 1:
            raise ValueError(
                "NOMENCLATURE_REVIEW_MAX_PER_HOUR must be >= 0 and NOMENCLATURE_REVIEW_VOTES >= 1, not "
                f"{settings.review_max_per_hour!r} and {settings.review_votes!r}"
            )
        if settings.session_timeout_seconds is not None and settings.session_timeout_seconds <= 0:
            raise ValueError(
                f"NOMENCLATURE_SESSION_TIMEOUT_SECONDS must be > 0, not {settings.session_timeout_seconds!r}"
            )
        if not 0 < settings.predict_share <= 1:
            raise ValueError(f"NOMENCLATURE_PREDICT_SHARE must be in (0, 1], not {settings.predict_share!r}")
        return settings

    @staticmethod
    def env_names() -> dict[str, str]:
        """Environment variable name -> field name, for docs and checks."""
        return {f.metadata.get("env", ENV_PREFIX + f.name.upper()): f.name for f in fields(Settings)}

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.broker_port}"

    @property
    def is_tansu(self) -> bool:
        if self.broker_flavor == "auto":
            return self.embedded_broker
        return self.broker_flavor == "tansu"

    @property
    def models_dir(self) -> Path:
        return self.models_path or self.data_dir / "models"

    @property
    def corrections_dir(self) -> Path:
        return self.models_dir / "corrections"

    @property
    def tables_dir(self) -> Path:
        return self.data_dir / "tables"
