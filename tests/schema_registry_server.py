"""A stand-in Confluent-compatible Schema Registry for tests (no real registry is installable here).

An aiohttp app in a background thread, in memory, Avro only, no compatibility checks. It serves
what the Confluent API reference documents for the calls that ``confluent_kafka`` 2.16's
``SchemaRegistryClient`` makes for ``AvroSerializer``/``AvroDeserializer``, with the documented
error bodies ``{"error_code": ..., "message": ...}``::

    with SchemaRegistryServer() as registry:
        client = SchemaRegistryClient({"url": registry.url})

Schema ids are global: the same schema (same parsed JSON) gets the same id under every subject.
``requests`` lists ``(method, path_qs)`` of every request received.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from fastavro import parse_schema

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
COMPATIBILITY_LEVELS = frozenset(
    {"BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"}
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RegistryHTTPError(Exception):
    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def _reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=CONTENT_TYPE)


class SchemaRegistryServer:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.requests: list[tuple[str, str]] = []
        self.schemas: dict[int, str] = {}  # id -> schema text as first registered
        self.subjects: dict[str, list[int]] = {}  # subject -> schema id of version i + 1
        self.compatibility = "BACKWARD"
        self.subject_compatibility: dict[str, str] = {}
        self._ids_by_key: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on 127.0.0.1 and a free port; returns the base URL."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(sock, ready), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("stand-in schema registry did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> SchemaRegistryServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        runner = web.AppRunner(self._app(), access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.SockSite(runner, sock).start())
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    # -- state -------------------------------------------------------------------------------

    def _register(self, subject: str, text: str) -> tuple[int, int]:
        """(id, version) of ``text`` under ``subject``, registering it if new."""
        key = self._key(text)
        schema_id = self._ids_by_key.get(key)
        versions = self.subjects.setdefault(subject, [])
        if schema_id is not None and schema_id in versions:
            return schema_id, versions.index(schema_id) + 1
        if schema_id is None:
            schema_id = max(self.schemas, default=0) + 1
            self.schemas[schema_id] = text
            self._ids_by_key[key] = schema_id
        versions.append(schema_id)
        return schema_id, len(versions)

    @staticmethod
    def _key(text: str) -> str:
        try:
            schema = json.loads(text)
            parse_schema(schema)
        except Exception as exc:
            raise RegistryHTTPError(422, 42201, f"Invalid schema: {exc}") from None
        return json.dumps(schema, sort_keys=True, separators=(",", ":"))

    def _versions(self, subject: str) -> list[int]:
        if subject not in self.subjects:
            raise RegistryHTTPError(404, 40401, f"Subject '{subject}' not found.")
        return self.subjects[subject]

    def _version(self, subject: str, version: str) -> dict[str, Any]:
        versions = self._versions(subject)
        if version in ("latest", "-1"):
            number = len(versions)
        elif version.isdigit() and int(version) > 0:
            number = int(version)
        else:
            raise RegistryHTTPError(
                422, 42202, f"The specified version '{version}' is not a valid version id. "
                "Allowed values are between [1, 2^31-1] and the string \"latest\""
            )
        if not 1 <= number <= len(versions):
            raise RegistryHTTPError(404, 40402, f"Version {version} not found.")
        schema_id = versions[number - 1]
        return {"subject": subject, "version": number, "id": schema_id, "schema": self.schemas[schema_id]}

    # -- HTTP --------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        get, post, put = web.get, web.post, web.put
        app.add_routes([
            get("/", self._root),
            get("/schemas/types", self._schema_types),
            get(r"/schemas/ids/{id:\d+}", self._schema_by_id),
            get(r"/schemas/ids/{id:\d+}/subjects", self._subjects_of_id),
            get(r"/schemas/ids/{id:\d+}/versions", self._versions_of_id),
            get("/subjects", self._list_subjects),
            post("/subjects/{subject}", self._lookup),
            get("/subjects/{subject}/versions", self._list_versions),
            post("/subjects/{subject}/versions", self._register_version),
            get("/subjects/{subject}/versions/{version}", self._get_version),
            get("/subjects/{subject}/versions/{version}/schema", self._get_version_schema),
            get("/config", self._get_config),
            put("/config", self._put_config),
            get("/config/{subject}", self._get_config),
            put("/config/{subject}", self._put_config),
            get("/mode", self._get_mode),
            # confluent-kafka >= 2.13 resolves subjects through associations first (and falls
            # back to TopicNameStrategy when there are none).
            get("/associations/resources/{namespace}/{name}", self._associations),
        ])
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if self.credentials is not None and request.headers.get("Authorization") != self._basic():
            return _reply({"error_code": 401, "message": "Unauthorized"}, 401)
        try:
            return await handler(request)
        except RegistryHTTPError as exc:
            return _reply({"error_code": exc.error_code, "message": exc.message}, exc.status)
        except web.HTTPException as exc:  # unknown route or method
            message = f"HTTP {exc.status} {exc.reason}"
            return _reply({"error_code": exc.status, "message": message}, exc.status)

    def _basic(self) -> str:
        assert self.credentials is not None
        return "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise RegistryHTTPError(400, 400, "Malformed JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            raise RegistryHTTPError(422, 422, "Unrecognized request: a 'schema' string is required")
        if (body.get("schemaType") or "AVRO") != "AVRO":
            raise RegistryHTTPError(422, 42201, f"Invalid schema: unsupported type {body['schemaType']}")
        if body.get("references"):
            raise RegistryHTTPError(422, 42201, "Invalid schema: references are not supported here")
        return body

    async def _root(self, request: web.Request) -> web.Response:
        return _reply({})

    async def _schema_types(self, request: web.Request) -> web.Response:
        return _reply(["AVRO"])

    def _schema_id(self, request: web.Request) -> int:
        schema_id = int(request.match_info["id"])
        if schema_id not in self.schemas:
            raise RegistryHTTPError(404, 40403, f"Schema {schema_id} not found")
        return schema_id

    async def _schema_by_id(self, request: web.Request) -> web.Response:
        # ?subject=, ?format=, ?fetchMaxId= ... are accepted and ignored
        return _reply({"schema": self.schemas[self._schema_id(request)]})

    def _pairs(self, request: web.Request) -> list[tuple[str, int]]:
        schema_id = self._schema_id(request)
        return [(s, v + 1) for s, ids in self.subjects.items() for v, i in enumerate(ids) if i == schema_id]

    async def _subjects_of_id(self, request: web.Request) -> web.Response:
        return _reply(sorted({subject for subject, _ in self._pairs(request)}))

    async def _versions_of_id(self, request: web.Request) -> web.Response:
        return _reply([{"subject": s, "version": v} for s, v in self._pairs(request)])

    async def _list_subjects(self, request: web.Request) -> web.Response:
        prefix = request.query.get("subjectPrefix", "")
        return _reply(sorted(s for s in self.subjects if s.startswith(prefix) and self.subjects[s]))

    async def _list_versions(self, request: web.Request) -> web.Response:
        return _reply(list(range(1, len(self._versions(request.match_info["subject"])) + 1)))

    async def _register_version(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        text = (await self._body(request))["schema"]
        schema_id, version = self._register(subject, text)
        text = self.schemas[schema_id]
        return _reply({"id": schema_id, "subject": subject, "version": version, "schema": text})

    async def _lookup(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        body = await self._body(request)
        versions = self._versions(subject)
        schema_id = self._ids_by_key.get(self._key(body["schema"]))
        if schema_id is None or schema_id not in versions:
            raise RegistryHTTPError(404, 40403, "Schema not found")
        return _reply(self._version(subject, str(versions.index(schema_id) + 1)))

    async def _get_version(self, request: web.Request) -> web.Response:
        return _reply(self._version(request.match_info["subject"], request.match_info["version"]))

    async def _get_version_schema(self, request: web.Request) -> web.Response:
        version = self._version(request.match_info["subject"], request.match_info["version"])
        return web.Response(body=version["schema"].encode(), content_type=CONTENT_TYPE)

    async def _get_config(self, request: web.Request) -> web.Response:
        subject = request.match_info.get("subject")
        if subject is None:
            return _reply({"compatibilityLevel": self.compatibility})
        level = self.subject_compatibility.get(subject)
        if level is None and request.query.get("defaultToGlobal") == "true":
            level = self.compatibility
        if level is None:
            raise RegistryHTTPError(
                404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
            )
        return _reply({"compatibilityLevel": level})

    async def _put_config(self, request: web.Request) -> web.Response:
        try:
            level = json.loads(await request.text()).get("compatibility")
        except (ValueError, AttributeError):
            level = None
        if level not in COMPATIBILITY_LEVELS:
            raise RegistryHTTPError(422, 42203, "Invalid compatibility level")
        subject = request.match_info.get("subject")
        if subject is None:
            self.compatibility = level
        else:
            self.subject_compatibility[subject] = level
        return _reply({"compatibility": level})

    async def _get_mode(self, request: web.Request) -> web.Response:
        return _reply({"mode": "READWRITE"})

    async def _associations(self, request: web.Request) -> web.Response:
        return _reply([])
