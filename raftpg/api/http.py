"""HTTP plumbing shared by the routes: JSON replies, request bodies, the error and size middlewares.

Every error leaves as JSON ``{"error": "..."}`` naming the offending field where there is one; an
unexpected exception is logged with its traceback and answered 500 without details (it is a bug).

Bodies: a request that declares no length but sends one (``Transfer-Encoding: chunked``) gets 411; a
declared or actual length over the cap gets 413. A POST with no body at all is an empty object, so
Patroni habits such as ``curl -XPOST :8008/restart`` keep working.

Authentication of the unsafe methods (``UNSAFE``) lives in ``auth.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar, overload

from aiohttp import web
from aiohttp.typedefs import Middleware

from raftpg.ha.operations import OperationError, Refusal

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BadRequest(Exception):
    """A request that cannot be understood: 400 with ``message`` (which names the field)."""

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers,
                             dumps=lambda v: json.dumps(v, separators=(",", ":"), default=str))


def error(message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return reply({"error": message}, status, headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: web.Request, *, required: bool = False) -> dict[str, Any]:
    """The body as a JSON object ({} when empty and not required); BadRequest names what is wrong."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise BadRequest("body: a JSON object is required")
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise BadRequest("body: not UTF-8 text") from None
    except RecursionError:  # e.g. 20k nested lists: Python's parser runs out of stack
        raise BadRequest("body: not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise BadRequest(f"body: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadRequest(f"body: must be a JSON object, got {type(data).__name__}")
    return data


_TYPE_NAMES = {str: "a string", bool: "true or false", dict: "an object", int: "an integer"}


_T = TypeVar("_T")


@overload
def field(body: dict[str, Any], name: str, kind: type[_T], *, required: Literal[True]) -> _T: ...


@overload
def field(body: dict[str, Any], name: str, kind: type[_T], *, required: bool = False) -> _T | None: ...


def field(body: dict[str, Any], name: str, kind: type[_T], *, required: bool = False) -> _T | None:
    """``body[name]`` checked to be of ``kind`` (None when absent/null and not required)."""
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name}: required")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"{name}: must be {_TYPE_NAMES.get(kind, kind.__name__)}, "
                         f"got {type(value).__name__}")
    if isinstance(value, str) and kind is str and not value.strip():
        raise BadRequest(f"{name}: must not be empty")
    return value


# --------------------------------------------------------------------------------------- middlewares


REFUSAL_STATUS = {
    Refusal.INVALID: 400, Refusal.UNKNOWN: 404, Refusal.CONFLICT: 409, Refusal.REFUSED: 412,
    Refusal.UNAVAILABLE: 503,
}


def errors_middleware() -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error(exc.message, exc.http_status)
        except OperationError as exc:
            return error(exc.message, REFUSAL_STATUS[exc.kind])
        except web.HTTPException as exc:
            if exc.empty_body or exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
            return error(exc.reason.lower() if exc.text is None else _http_text(exc), exc.status, headers)
        except Exception:
            log.exception("REST API: %s %s failed", request.method, request.path)
            return error("internal error (logged on the node)", 500)

    return errors


def _http_text(exc: web.HTTPException) -> str:
    text = (exc.text or "").strip()
    if exc.status == 413:
        return "body: too large"
    return text.split(": ", 1)[-1].lower() if text else exc.reason.lower()


def limits_middleware(max_body_bytes: int) -> Middleware:
    @web.middleware
    async def limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in BODY_METHODS:
            length = request.content_length
            if length is None and request.headers.get("Transfer-Encoding"):
                return error("Content-Length: required for a request body", 411)
            if length is not None and length > max_body_bytes:
                return error(f"body: larger than {max_body_bytes} bytes", 413)
        return await handler(request)

    return limits
