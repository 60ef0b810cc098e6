"""Who may change state through the web server: `admin_only` guards a view's method.

With ``NOMENCLATURE_ADMIN_TOKEN`` set, a request must carry ``Authorization: Bearer <token>``; with
``NOMENCLATURE_ADMIN_USER`` and ``NOMENCLATURE_ADMIN_PASSWORD`` set, HTTP Basic with them is accepted too.
Anything else is 401 with ``WWW-Authenticate`` naming the schemes accepted. With neither configured, the
guarded endpoints answer only while the web server binds a loopback address (only this machine reaches
them) and refuse with 403 otherwise, rather than being open to a network.

Secrets are compared in constant time (`hmac.compare_digest`) and never appear in a log line, an answer
or the settings' repr.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faust.web import Request, Response, View

from streams.settings import Settings

REALM = "nomenclature"

Method = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Admin:
    """Who was let through: ``via`` is ``bearer`` (the token), ``basic`` (then ``user`` is the user name)
    or ``loopback`` (no secret configured, a loopback bind)."""

    via: str
    user: str | None = None

    def __str__(self) -> str:
        return f"basic user {self.user}" if self.via == "basic" else self.via


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminCheck:
    def __init__(self, settings: Settings) -> None:
        self._token = (settings.admin_token or "").encode("utf-8")
        basic = settings.admin_user is not None and settings.admin_password is not None
        self._user = (settings.admin_user or "").encode("utf-8") if basic else b""
        self._password = (settings.admin_password or "").encode("utf-8") if basic else b""
        self._basic = basic
        self.loopback_bind = is_loopback(settings.web_host)
        self.web_host = settings.web_host

    @property
    def configured(self) -> bool:
        return bool(self._token) or self._basic

    def _challenge(self) -> dict[str, str]:
        schemes = []
        if self._token:
            schemes.append(f'Bearer realm="{REALM}"')
        if self._basic:
            schemes.append(f'Basic realm="{REALM}", charset="UTF-8"')
        return {"WWW-Authenticate": ", ".join(schemes)}

    def check(self, authorization: str | None) -> Admin | Refusal:
        if not self.configured:
            if self.loopback_bind:
                return Admin("loopback")
            return Refusal(
                403,
                "this endpoint changes state and no NOMENCLATURE_ADMIN_TOKEN (or NOMENCLATURE_ADMIN_USER "
                "and NOMENCLATURE_ADMIN_PASSWORD) is configured, so it answers only on a loopback bind; "
                f"the web server binds {self.web_host}",
                {},
            )
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and self._token:
            if hmac.compare_digest(credentials.encode("utf-8"), self._token):
                return Admin("bearer")
            return self._refuse("the bearer token is not the admin token")
        if scheme == "basic" and self._basic:
            user = self._basic_user(credentials)
            if user is not None:
                return Admin("basic", user)
            return self._refuse("wrong user or password")
        if not authorization:
            return self._refuse("this endpoint changes state and needs the admin credentials")
        return self._refuse(f"the {scheme or 'empty'} authorization scheme is not accepted here")

    def _basic_user(self, credentials: str) -> str | None:
        try:
            user, sep, password = base64.b64decode(credentials, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return None
        # both compared whatever the first says, so the time taken does not tell which one was wrong
        right_user = hmac.compare_digest(user, self._user)
        right_password = hmac.compare_digest(password, self._password)
        if sep and right_user and right_password:
            return user.decode("utf-8", errors="replace")
        return None

    def _refuse(self, error: str) -> Refusal:
        return Refusal(401, error, self._challenge())


def admin_only(check: AdminCheck) -> Callable[[Method], Method]:
    """Guard a view method: the request goes through only with the admin credentials; the method gets the
    `Admin` let through as keyword ``admin``."""

    def guard(method: Method) -> Method:
        @functools.wraps(method)
        async def guarded(self: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            found = check.check(request.headers.get("Authorization"))
            if isinstance(found, Refusal):
                return self.json({"error": found.error}, status=found.status, headers=found.headers)
            return await method(self, request, *args, admin=found, **kwargs)

        return guarded

    return guard
