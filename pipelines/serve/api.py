"""The metrics API: read-only HTTP over the published gold tables, one tenant per token.

``GET /v1/<metric>?from=YYYY-MM-DD&to=YYYY-MM-DD`` answers the tenant's rows as JSON (or CSV with
``format=csv`` or ``Accept: text/csv``). The tenant comes from the bearer token, never from the request alone:
a tenant token reads its own tenant and is refused (403) for any other; an operator token (created with
``--all-tenants``) must name one with ``tenant=``. Answers are cached per (request, gold table version) - see
``pipelines.serve.metrics`` - and say so in ``X-Cache`` (hit/miss) and ``X-Table-Version``. A bad parameter
gets a 400 whose ``error`` names it; the OpenAPI description is at ``/openapi.json`` and ``/docs``.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from pipelines.config import Settings
from pipelines.serve.metrics import (
    METRICS,
    FilterError,
    GoldReader,
    Metric,
    NotPublished,
    ResponseCache,
    select_rows,
)
from pipelines.serve.tokens import ALL_TENANTS, TokenStore

COMMON_PARAMETERS = ("from", "to", "tenant", "format")


class ApiError(Exception):
    def __init__(self, status: int, message: str, parameter: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.parameter, self.headers = status, parameter, headers


def _json_value(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # money stays exact
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _csv_value(value: Any) -> Any:
    return _json_value(value) if isinstance(value, (date, datetime, Decimal)) else value


def render(rows: list[dict[str, Any]], fmt: str, envelope: dict[str, Any]) -> tuple[bytes, str]:
    if fmt == "csv":
        out = io.StringIO()
        columns = list(rows[0]) if rows else []
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
        return out.getvalue().encode(), "text/csv; charset=utf-8"
    return json.dumps({**envelope, "rows": rows}, default=_json_value).encode(), "application/json"


def create_app(settings: Settings) -> FastAPI:
    reader = GoldReader(settings)
    cache = ResponseCache(settings.serve.cache_entries)
    tokens = TokenStore(Path(settings.resolve_path(settings.serve.tokens_file)))
    app = FastAPI(
        title="Lakehouse metrics API",
        version="1",
        description=__doc__,
        docs_url="/docs",
        redoc_url=None,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        body = {"error": str(exc)} | ({"parameter": exc.parameter} if exc.parameter else {})
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        name = str(first["loc"][-1]) if first.get("loc") else "request"
        given = first.get("input")
        message = f"{name}: {first['msg']}" + (f" (got {given!r})" if isinstance(given, str) else "")
        return JSONResponse({"error": message, "parameter": name}, status_code=400)

    @app.get("/health", tags=["service"], summary="liveness: answers without a token")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    def tenant_of(request: Request, asked: str | None) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not secret:
            raise ApiError(401, "missing token: send 'Authorization: Bearer <token>'", headers=challenge)
        token = tokens.resolve(secret.strip())
        if token is None:
            raise ApiError(401, "unknown or revoked token", headers=challenge)
        if token.tenant == ALL_TENANTS:
            if not asked:
                raise ApiError(400, "tenant: an operator token must name the tenant (tenant=...)", "tenant")
            return asked
        if asked and asked != token.tenant:
            raise ApiError(403, f"tenant: this token reads tenant {token.tenant} only", "tenant")
        return token.tenant

    for metric in METRICS:
        app.add_api_route(
            f"/v1/{metric.path}",
            _endpoint(metric, settings, reader, cache, tenant_of),
            methods=["GET"],
            summary=metric.summary,
            description=f"Rows of `gold.{metric.table}` for the token's tenant, `from`..`to` inclusive.",
            tags=["metrics"],
            response_class=Response,
        )
    return app


def _endpoint(
    metric: Metric,
    settings: Settings,
    reader: GoldReader,
    cache: ResponseCache,
    tenant_of: Callable[[Request, str | None], str],
) -> Callable[..., Response]:
    """The route function of one metric; its signature lists the metric's filters, so OpenAPI documents them."""

    def endpoint(request: Request, **params: Any) -> Response:
        known = set(COMMON_PARAMETERS) | set(metric.filters)
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            raise ApiError(400, f"{unknown[0]}: unknown parameter; known: {', '.join(sorted(known))}", unknown[0])
        first, last = params["from_"], params["to"]
        if first > last:
            raise ApiError(400, f"from: {first} is after to ({last})", "from")
        if (last - first).days + 1 > settings.serve.max_range_days:
            raise ApiError(400, f"to: at most {settings.serve.max_range_days} days per request", "to")
        tenant = tenant_of(request, params["tenant"])
        accept = request.headers.get("accept", "")
        fmt = params["format"] or ("csv" if "text/csv" in accept else "json")
        filters = {name: params[name] for name in metric.filters if params[name] is not None}
        try:
            version = reader.version(metric.table)
        except NotPublished as exc:
            raise ApiError(503, str(exc)) from None
        key = (tenant, first, last, tuple(sorted(filters.items())), fmt)
        cached = cache.get(metric.table, version, key)
        state = "hit"
        if cached is None:
            state = "miss"
            try:
                rows = select_rows(metric, reader.dataset(metric.table, version), tenant, first, last, filters)
            except FilterError as exc:
                raise ApiError(400, str(exc), exc.parameter) from None
            envelope = {"tenant": tenant, "table": f"gold.{metric.table}", "version": version}
            envelope |= {"from": first.isoformat(), "to": last.isoformat()}
            cached = render(rows.to_pylist(), fmt, envelope)
            cache.put(metric.table, version, key, cached)
        body, media_type = cached
        headers = {"X-Cache": state, "X-Table-Version": str(version)}
        return Response(body, media_type=media_type, headers=headers)

    parameters = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        _query("from_", date, Query(alias="from", description="first day (YYYY-MM-DD)")),
        _query("to", date, Query(description="last day, inclusive (YYYY-MM-DD)")),
        _query("tenant", str | None, Query(None, description="operator tokens only: the tenant to read")),
        _query("format", str | None, Query(None, pattern="^(json|csv)$", description="json (default) or csv")),
        *(_query(name, str | None, Query(None, description=f"only rows with this {name}")) for name in metric.filters),
    ]
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = metric.path.replace("-", "_")
    return endpoint


def _query(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def run_server(settings: Settings, say: Callable[[str], None], port: int | None = None) -> None:
    """Serve the API until SIGINT/SIGTERM on ``serve.host`` and ``port`` (default ``serve.api_port``; 0: free)."""
    import socket

    import uvicorn

    host = settings.serve.host
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, settings.serve.api_port if port is None else port))
    listener.listen(2048)  # connections queue from now on, so the printed address answers at once
    bound = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", access_log=False))
    say(f"metrics API on http://{host}:{bound} (OpenAPI: http://{host}:{bound}/docs); Ctrl-C stops it")
    server.run(sockets=[listener])
