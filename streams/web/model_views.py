"""Web views of the model lifecycle: ``GET /models``, ``POST /corrections``, ``POST /retrain`` (the two
``POST``s change state: `streams.web.auth.admin_only` guards them).

``GET /models`` answers on every worker: what this worker serves (champion, challenger, refused artifacts),
the registry's aliases and champion history, this worker's correction counts, and the retraining
coordinator's view (cycles, triggers, gate, shadow comparison), which it fetches from the worker that runs
the coordinator (``GET /models/lifecycle`` there) when that is another one. Each function returns the
view's class; `streams.app` mounts it at its path.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import faust
from faust.web import Request, Response, View

from models.registry.model_registry import ModelRegistry, UnknownModelError
from schemas import now_ms
from streams.lifecycle.agents import CorrectionsAgent, LifecycleHost
from streams.lifecycle.corrections import correction_value
from streams.lifecycle.model_follower import ModelFollower
from streams.pipeline.emit import BatchProducer
from streams.pipeline.messages import OutRecord
from streams.pipeline.validation import Issue
from streams.topics import CORRECTIONS
from streams.web.auth import Admin, AdminCheck, admin_only

MAX_CORRECTIONS_PER_POST = 10_000


def registry_view(registry: ModelRegistry) -> dict[str, Any]:
    aliases = registry.aliases()
    body: dict[str, Any] = {
        "root": str(registry.root),
        "aliases": aliases,
        "champion_history": registry.champion_history(),
        # every alias change, oldest first: the dashboard plots promotions and rollbacks from it
        "alias_events": registry.alias_events(),
    }
    for alias, version in aliases.items():
        try:
            record = registry.get(version)
        except UnknownModelError:
            continue
        body[alias] = {
            "version": record.version,
            "created_at": record.created_at,
            "notes": record.notes,
            "macro_f1": record.metrics.get("macro_f1"),
            "training_seconds": record.training_seconds,
            "gate": record.metrics.get("gate"),
        }
    return body


async def _json_body(request: Request) -> Any:
    raw = await request.read()
    return json.loads(raw.decode("utf-8")) if raw.strip() else None


async def _coordinator_state(app: faust.App, lifecycle: LifecycleHost) -> dict[str, Any]:
    """The retraining coordinator's snapshot: from this worker if it runs it, else from the one that does."""
    coordinator = lifecycle.current()
    if coordinator is not None:
        return {"host": "this worker", **coordinator.snapshot()}
    try:
        url = app.router.key_store(lifecycle.table.table.name, "state")
    except Exception as exc:  # no assignment or metadata yet
        return {"status": "unavailable", "detail": f"no coordinator assigned yet ({type(exc).__name__})"}
    try:
        address = f"{str(url).rstrip('/')}/models/lifecycle"
        async with app.http_client.get(address, timeout=aiohttp.ClientTimeout(total=5)) as response:
            return {"host": str(url), **(await response.json())}
    except Exception as exc:
        return {"status": "unavailable", "detail": f"{url} did not answer: {type(exc).__name__}: {exc}"}


def models_view(
    app: faust.App, follower: ModelFollower, lifecycle: LifecycleHost, corrections: CorrectionsAgent
) -> type[View]:
    class ModelsView(View):
        async def get(self, request: Request) -> Response:
            body = {
                "worker": follower.snapshot(),
                "registry": registry_view(follower.registry),
                "corrections": corrections.counts,
                "lifecycle": await _coordinator_state(app, lifecycle),
            }
            return self.json(body)

    return ModelsView


def lifecycle_view(lifecycle: LifecycleHost) -> type[View]:
    class LifecycleView(View):
        async def get(self, request: Request) -> Response:
            coordinator = lifecycle.current()
            if coordinator is None:
                return self.json({"status": "unavailable", "detail": "not the coordinator"}, status=503)
            return self.json(coordinator.snapshot())

    return LifecycleView


def corrections_view(producer: BatchProducer, corrections: CorrectionsAgent, check: AdminCheck) -> type[View]:
    class CorrectionsView(View):
        @admin_only(check)
        async def post(self, request: Request, admin: Admin) -> Response:
            """One correction (a JSON object) or many (a list), validated here and published."""
            try:
                body = await _json_body(request)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return self.json({"error": f"the body is not JSON: {exc}"}, status=400)
            values = body if isinstance(body, list) else [body]
            if not values or not all(isinstance(v, dict) for v in values):
                return self.json({"error": "expected a correction object or a list of them"}, status=400)
            if len(values) > MAX_CORRECTIONS_PER_POST:
                return self.json(
                    {"error": f"at most {MAX_CORRECTIONS_PER_POST} corrections a request"}, status=413
                )
            processor = corrections.processor
            records, refused = [], []
            for index, raw in enumerate(values):
                try:
                    value = correction_value(raw)
                    if value["user"] is None and admin.user is not None:
                        value["user"] = admin.user  # who signed in with HTTP Basic made it
                    errors = processor.check(value, value["id"], now_ms())[1]
                    encoded = b"" if errors else processor.serde.encode(value)
                except (TypeError, ValueError, AttributeError) as exc:  # not shaped like a Correction
                    errors = [Issue("", "wrong_type", f"{type(exc).__name__}: {exc}")]
                if errors:
                    refused.append(
                        {"index": index, "id": raw.get("id"), "errors": [e.as_dict() for e in errors]}
                    )
                    continue
                key = value["id"].encode("utf-8")
                records.append(OutRecord(CORRECTIONS, key, encoded, now_ms()))
            if refused:
                return self.json({"published": 0, "refused": refused}, status=422)
            await producer.send_all(records)
            return self.json({"published": len(records), "topic": CORRECTIONS}, status=202)

    return CorrectionsView


def retrain_view(lifecycle: LifecycleHost, check: AdminCheck) -> type[View]:
    class RetrainView(View):
        @admin_only(check)
        async def post(self, request: Request, admin: Admin) -> Response:
            try:
                body = await _json_body(request) or {}
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return self.json({"error": f"the body is not JSON: {exc}"}, status=400)
            if not isinstance(body, dict):
                return self.json({"error": "expected a JSON object: {reason, requested_by}"}, status=400)
            reason = str(body.get("reason") or "requested through POST /retrain")
            requested_by = str(body.get("requested_by") or f"web ({admin})")
            await lifecycle.request("manual", reason, requested_by)
            return self.json({"requested": True, "reason": reason, "see": "GET /models"}, status=202)

    return RetrainView
