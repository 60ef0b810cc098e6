"""``RegistryCatalogue``: a small synchronous client of a Confluent-compatible Schema Registry.

Only the standard library is used, so it works from sync code, threads and (for the rare cache
miss) from an event loop alike. A miss blocks for one HTTP request; every id is fetched once.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from schemas.avsc import Schema, canonical_json
from schemas.errors import RegistryError, SchemaNotInCatalogueError, UnknownSchemaIdError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPT = f"{CONTENT_TYPE}, application/vnd.schemaregistry+json, application/json"

SUBJECT_NOT_FOUND = 40401
SCHEMA_NOT_FOUND = 40403

_MAX_NEGATIVE_ENTRIES = 10_000


class RegistryCatalogue:
    """Schema ids from a schema registry at ``url`` (``http(s)://[user:pass@]host:port[/path]``).

    ``id_for`` registers the schema under the subject (``POST /subjects/{subject}/versions``), or
    with ``auto_register=False`` only looks it up (``POST /subjects/{subject}``). ``schema_for``
    reads ``GET /schemas/ids/{id}``; ids the registry does not know (404, error_code 40403) are
    remembered for ``negative_ttl`` seconds so that a stream of garbage does not cost a request
    per record. Errors other than "unknown" raise ``RegistryError``.
    """

    def __init__(
        self, url: str, timeout: float = 5, *, auto_register: bool = True, negative_ttl: float = 30.0
    ) -> None:
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"schema registry URL must be http(s)://host[:port][/path], got {url!r}")
        host = parts.netloc.rpartition("@")[2]
        self.base_url = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self.timeout = timeout
        self.auto_register = auto_register
        self.negative_ttl = negative_ttl
        self._auth: str | None = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Schema] = {}
        self._unknown: dict[int, float] = {}

    def __repr__(self) -> str:
        return f"RegistryCatalogue({self.base_url!r})"

    def id_for(self, subject: str, schema: Mapping[str, Any]) -> int:
        key = (subject, canonical_json(schema))
        schema_id = self._ids.get(key)
        if schema_id is not None:
            return schema_id
        body = {"schema": json.dumps(schema, separators=(",", ":"), ensure_ascii=False)}
        path = "/subjects/" + urllib.parse.quote(subject, safe="")
        if self.auto_register:
            path += "/versions"
        try:
            response = self._request("POST", path, body)
        except RegistryError as exc:
            if not self.auto_register and exc.error_code in (SUBJECT_NOT_FOUND, SCHEMA_NOT_FOUND):
                raise SchemaNotInCatalogueError(
                    f"schema {schema.get('name')!r} is not registered under subject {subject!r} "
                    f"at {self.base_url} ({exc.registry_message})"
                ) from None
            raise
        schema_id = response.get("id") if isinstance(response, dict) else None
        if not isinstance(schema_id, int):
            where = f"POST {self.base_url}{path}"
            raise RegistryError(where, f"response has no integer 'id': {response!r:.200}")
        self._ids[key] = schema_id
        self._schemas.setdefault(schema_id, copy.deepcopy(dict(schema)))
        return schema_id

    def schema_for(self, schema_id: int) -> Schema:
        schema = self._schemas.get(schema_id)
        if schema is None:
            schema = self._fetch(schema_id)
        return copy.deepcopy(schema)

    def _fetch(self, schema_id: int) -> Schema:
        now = time.monotonic()
        expires = self._unknown.get(schema_id)
        if expires is not None and expires > now:
            raise UnknownSchemaIdError(schema_id, f"not in the schema registry at {self.base_url} (cached)")
        path = f"/schemas/ids/{schema_id}"
        try:
            response = self._request("GET", path)
        except RegistryError as exc:
            if exc.status == 404 and exc.error_code == SCHEMA_NOT_FOUND:
                self._remember_unknown(schema_id, now)
                raise UnknownSchemaIdError(
                    schema_id, f"not in the schema registry at {self.base_url}"
                ) from None
            raise
        schema = _avro_schema(schema_id, response)
        self._unknown.pop(schema_id, None)
        self._schemas[schema_id] = schema
        return schema

    def _remember_unknown(self, schema_id: int, now: float) -> None:
        if len(self._unknown) >= _MAX_NEGATIVE_ENTRIES:
            self._unknown = {k: t for k, t in self._unknown.items() if t > now}
            if len(self._unknown) >= _MAX_NEGATIVE_ENTRIES:
                self._unknown.clear()
        self._unknown[schema_id] = now + self.negative_ttl

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        url = self.base_url + path
        headers = {"Accept": ACCEPT}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = CONTENT_TYPE
        if self._auth is not None:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(f"{method} {url}", exc) from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(f"{method} {url}", f"cannot connect: {reason}") from exc
        try:
            return json.loads(payload) if payload else None
        except ValueError:
            raise RegistryError(f"{method} {url}", f"response is not JSON: {payload[:200]!r}") from None


def _http_error(where: str, exc: urllib.error.HTTPError) -> RegistryError:
    raw = exc.read() or b""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and "error_code" in body:
        code = body.get("error_code")
        code = code if isinstance(code, int) else None
        return RegistryError(where, str(body.get("message", "")), status=exc.code, error_code=code)
    text = raw[:200].decode("utf-8", "replace") or str(exc.reason)
    return RegistryError(where, text, status=exc.code)


def _avro_schema(schema_id: int, response: Any) -> Schema:
    # Returned schemas that we cannot use are ValueErrors: the serde maps them to
    # incompatible_schema for the records that carry the id.
    if not isinstance(response, dict) or not isinstance(response.get("schema"), str):
        raise ValueError(f"schema id {schema_id}: registry response has no 'schema' string")
    schema_type = response.get("schemaType") or "AVRO"
    if schema_type != "AVRO":
        raise ValueError(f"schema id {schema_id} is a {schema_type} schema, not Avro")
    if response.get("references"):
        raise ValueError(f"schema id {schema_id} uses schema references, which are not supported")
    try:
        schema = json.loads(response["schema"])
    except ValueError as exc:
        raise ValueError(f"schema id {schema_id} is not JSON, so not an Avro schema: {exc}") from None
    if isinstance(schema, str):  # a primitive written as a bare JSON string
        schema = {"type": schema}
    if not isinstance(schema, dict):
        raise ValueError(f"schema id {schema_id} is not a named Avro schema")
    return schema
