"""The Tungku API (FastAPI): what operators, inspectors and administrators need, safely.

Every endpoint but `/api/v1/health` and `/api/v1/auth/login` needs a bearer token
(`dashboards.auth`). Access is by role and by facility: a user sees only the facilities it is
assigned (an admin sees all). Refusals name the problem: 401 without a valid token, 403 for a
role or facility the user does not have, 404 for what does not exist, 409 for a conflict, 422
for a request that is malformed or that the record refuses.

Every change made here is journaled with the user: operator actions on alerts in the alert
journal, everything else (users, the facility record, annotations) in the record history.

One connection pool per app (psycopg_pool), opened and checked in the lifespan: the app refuses
to start on a schema that is not migrated, with a message saying to run `tungku db migrate`.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import pathlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Annotated, Any, Final

import orjson
import psycopg
import structlog
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from alerting import lifecycle
from alerting.pack import PackError, parse_pack
from alerting.store import ActionError, AlertStore, AlertStoreUnavailableError, to_us
from dashboards import auth, history, live, records, status, timeline
from dashboards.auth import Role, User
from dashboards.records import RecordError, jsonable
from ingest.migrate import available_migrations, session_sql
from ingest.settings import Settings

log = structlog.get_logger("tungku.api")

API: Final = "/api/v1"
SITE = Annotated[
    str,
    Path(
        pattern=records.SITE_RE,
        description="the facility (site) id",
        max_length=64,
        examples=["morowali-a"],
    ),
]
ENTRY_ID = Annotated[int, Path(ge=1, le=2**62)]
_bearer = HTTPBearer(auto_error=False, description="a token from POST /api/v1/auth/login")
_EVERYONE: Final = (Role.OPERATOR, Role.INSPECTOR, Role.ADMIN)
_READERS: Final = (Role.INSPECTOR, Role.ADMIN)


STATIC: Final = pathlib.Path(__file__).parent / "static"


def _hexed(v: Any) -> Any:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    raise TypeError(type(v).__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class SchemaNotReadyError(RuntimeError):
    """The database schema is missing or older than this code."""


# --- request and response models --------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return records.no_nul(data)


class LoginIn(_In):
    """Credentials."""

    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    """A bearer token and when it stops working."""

    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth 2 token type, not a secret
    expires_at: datetime
    role: Role


class UserOut(BaseModel):
    """A user as an admin sees it (never its password hash)."""

    username: str
    role: Role
    sites: list[str]
    disabled: bool


class UserIn(_In):
    """A new user."""

    username: str = Field(pattern=auth.USERNAME_RE.pattern)
    role: Role
    password: str = Field(min_length=auth.MIN_PASSWORD, max_length=1024)
    sites: list[Annotated[str, Field(pattern=records.SITE_RE)]] = Field(
        default_factory=list, max_length=500
    )


class UserChange(_In):
    """A change of role, facilities, password, or disabling (which revokes its tokens)."""

    role: Role | None = None
    password: str | None = Field(None, min_length=auth.MIN_PASSWORD, max_length=1024)
    sites: list[Annotated[str, Field(pattern=records.SITE_RE)]] | None = Field(None, max_length=500)
    disabled: bool | None = None


class ActionIn(_In):
    """An operator action on an alert."""

    comment: str = Field("", max_length=2000, description="why; required to shelve or comment")
    shelve_for_s: float | None = Field(
        None, gt=0, le=30 * 86400, description="shelve only: how long, seconds"
    )


class AlertAction(StrEnum):
    """Operator actions."""

    ACK = "ack"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"
    RESET = "reset"
    COMMENT = "comment"


class AnnotationIn(_In):
    """An inspector's note on the timeline: a moment, or a span with `until`."""

    at: records.Time
    until: records.Time | None = None
    asset: records.Asset = ""
    text: str = Field(min_length=1, max_length=4000)


class ErrorOut(BaseModel):
    """Why a request was refused: a sentence, or (422) one entry per problem with its place."""

    detail: str | list[dict[str, Any]]


#: Every operation may answer these; each names its problem in `detail`.
ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": ErrorOut, "description": "the body is not valid JSON"},
    401: {"model": ErrorOut, "description": "no token, or one unknown, expired or revoked"},
    403: {"model": ErrorOut, "description": "the user's role or facilities do not allow it"},
    404: {"model": ErrorOut, "description": "no such facility, entry, alert or pack"},
    409: {"model": ErrorOut, "description": "conflicts with the current state"},
    429: {"model": ErrorOut, "description": "too many failed logins: wait and try again"},
    422: {"model": ErrorOut, "description": "malformed, or refused by the record's rules"},
    503: {"model": ErrorOut, "description": "the database is unavailable"},
}


class ExportFormat(StrEnum):
    """Timeline export formats."""

    JSON = "json"
    CSV = "csv"
    HTML = "html"
    PDF = "pdf"


# --- the app ------------------------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    """The API over the database and schema of the settings."""

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(session_sql(settings.db_schema))
        await conn.execute("SET TIME ZONE 'UTC'")  # every time the API gives is in UTC

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
            settings.database_url,
            min_size=2,
            max_size=10,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 10},
            configure=configure,
            open=False,
            name="tungku-api",
        )
        await pool.open(wait=True, timeout=15)
        try:
            async with pool.connection() as conn:
                await _check_schema(conn)
            app.state.pool = pool
            app.state.renderer = None
            app.state.live = live.Broadcaster(settings.database_url, settings.db_schema)
            app.state.live.start()
            yield
        finally:
            if getattr(app.state, "live", None) is not None:
                await app.state.live.stop()
            if getattr(app.state, "renderer", None) is not None:
                app.state.renderer.shutdown(wait=True, cancel_futures=True)
            await pool.close()

    app = FastAPI(
        title="Tungku API",
        version="0.1.0",
        summary="Smelter safety alerts, incident timelines and the facility compliance record.",
        lifespan=lifespan,
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
        responses=ERRORS,
    )
    app.state.settings = settings

    @app.exception_handler(RecordError)
    async def _record_error(_r: Request, exc: RecordError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(timeline.TimelineError)
    async def _timeline_error(_r: Request, exc: timeline.TimelineError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(auth.AuthError)
    async def _auth_error(_r: Request, exc: auth.AuthError) -> JSONResponse:
        code = 409 if isinstance(exc, auth.AuthConflictError) else 422
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(psycopg.errors.UniqueViolation)
    async def _duplicate(_r: Request, exc: psycopg.errors.UniqueViolation) -> JSONResponse:
        # Two requests creating the same thing at once: the database keeps one.
        return JSONResponse({"detail": f"exists already: {_db_message(exc)}"}, 409)

    @app.exception_handler(psycopg.IntegrityError)
    async def _refused(_r: Request, exc: psycopg.IntegrityError) -> JSONResponse:
        return JSONResponse({"detail": f"refused by the database: {_db_message(exc)}"}, 422)

    @app.exception_handler(psycopg.DataError)
    async def _bad_data(_r: Request, exc: psycopg.DataError) -> JSONResponse:
        return JSONResponse({"detail": f"refused by the database: {_db_message(exc)}"}, 422)

    @app.exception_handler(AlertStoreUnavailableError)
    async def _store_down(_r: Request, exc: AlertStoreUnavailableError) -> JSONResponse:
        log.warning("database unavailable", error=str(exc))
        return JSONResponse({"detail": "the database is unavailable; try again"}, 503)

    @app.exception_handler(psycopg.OperationalError)
    async def _db_down(_r: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database unavailable", error=str(exc))
        return JSONResponse({"detail": "the database is unavailable; try again"}, 503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            problems.append(
                {
                    "loc": list(err.get("loc", ())),
                    "msg": f"{where}: {msg}",
                    "type": err.get("type", ""),
                }
            )
        return JSONResponse({"detail": problems}, status_code=422)

    _routes(app, settings)
    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    return app


def _db_message(exc: psycopg.Error) -> str:
    return (exc.diag.message_primary or str(exc)).strip()


async def _check_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    want = max(m.version for m in available_migrations())
    cur = await conn.execute(
        "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0"
        " ELSE (SELECT coalesce(max(version), 0) FROM schema_migrations) END AS v"
    )
    row = await cur.fetchone()
    have = int(row["v"]) if row else 0
    if have < want:
        raise SchemaNotReadyError(
            f"the database schema is at version {have}, this API needs {want}:"
            " run `tungku db migrate` first"
        )


# --- dependencies ------------------------------------------------------------------------------


async def _conn(request: Request) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
    async with request.app.state.pool.connection() as conn:
        yield conn


Conn = Annotated[psycopg.AsyncConnection[dict[str, Any]], Depends(_conn)]


async def _user(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> User:
    if creds is None:
        raise HTTPException(
            401,
            "this needs a bearer token: log in with POST /api/v1/auth/login",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # A connection of its own, returned at once: a handler that renders for seconds (exports)
    # must not hold one.
    async with request.app.state.pool.connection() as conn:
        user = await auth.authenticate(conn, creds.credentials, now=_now())
    if user is None:
        raise HTTPException(
            401,
            "the token is unknown, expired or revoked: log in again",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


def _role(*roles: Role) -> Callable[[User], Awaitable[User]]:
    async def check(user: Annotated[User, Depends(_user)]) -> User:
        if user.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise HTTPException(403, f"role {user.role.value} may not do this (needs {allowed})")
        return user

    return check


Anyone = Annotated[User, Depends(_role(*_EVERYONE))]
Reader = Annotated[User, Depends(_role(*_READERS))]
Admin = Annotated[User, Depends(_role(Role.ADMIN))]
Operator = Annotated[User, Depends(_role(Role.OPERATOR))]
Inspector = Annotated[User, Depends(_role(Role.INSPECTOR))]


def _see(user: User, site: str) -> None:
    if not user.sees(site):
        raise HTTPException(403, f"user {user.username} is not assigned to facility {site!r}")


async def _visible_site(site: SITE, user: Annotated[User, Depends(_user)]) -> str:
    """The path's facility, when the user may see it (a dependency: checked before a stream's
    response starts)."""
    _see(user, site)
    return site


def _window(
    start: datetime | None, end: datetime | None, default: timedelta
) -> tuple[datetime, datetime]:
    for name, v in (("from", start), ("to", end)):
        if v is not None and v.tzinfo is None:
            raise RecordError(f"'{name}' needs its UTC offset, e.g. 2026-12-07T08:00:00Z")
        if v is not None and not records.MIN_YEAR <= v.year < records.MAX_YEAR:
            raise RecordError(
                f"'{name}' must be between the years {records.MIN_YEAR} and {records.MAX_YEAR}"
            )
    end = end or _now()
    start = start or end - default
    if end <= start:
        raise RecordError("'to' must be after 'from'")
    return start.astimezone(UTC), end.astimezone(UTC)


From = Annotated[datetime | None, Query(alias="from", description="RFC 3339, with offset")]
To = Annotated[datetime | None, Query(alias="to", description="RFC 3339, with offset")]


def _json(doc: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code, media_type="application/json")


# --- routes ---------------------------------------------------------------------------------------


def _routes(app: FastAPI, settings: Settings) -> None:
    schema = settings.db_schema

    @app.get(f"{API}/health", tags=["service"])
    async def health(request: Request) -> dict[str, Any]:
        """Whether the API can reach its database (no authentication)."""
        try:
            async with request.app.state.pool.connection(timeout=5) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, TimeoutError) as exc:
            raise HTTPException(503, f"database unavailable: {exc}") from None
        return {"status": "ok", "schema": schema}

    # -- authentication --
    # [A] 10 tries a user, 50 an address, in 5 min: a forgotten password costs a few minutes,
    # a guessing run a few thousand attempts a day.
    user_throttle = auth.LoginThrottle(10, 300.0)
    address_throttle = auth.LoginThrottle(50, 300.0)

    @app.post(f"{API}/auth/login", tags=["auth"], responses={401: {"description": "refused"}})
    async def login(request: Request, body: LoginIn, conn: Conn) -> TokenOut:
        """Exchange a username and password for a bearer token that expires. After 10 failed
        attempts for one username, or 50 from one address, within 5 minutes, further attempts
        get 429 until the oldest failure is 5 minutes old."""
        now = time.monotonic()
        keys = (
            (user_throttle, body.username),
            (address_throttle, request.client.host if request.client else "?"),
        )
        wait = max(throttle.retry_after(key, now) for throttle, key in keys)
        if wait > 0:
            raise HTTPException(
                429,
                f"too many failed logins; try again in {math.ceil(wait)} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        got = await auth.login(
            conn, body.username, body.password, now=_now(), ttl_s=settings.api_token_ttl_s
        )
        if got is None:
            for throttle, key in keys:
                throttle.failed(key, time.monotonic())
            raise HTTPException(401, "unknown user, wrong password, or user disabled")
        user_throttle.succeeded(body.username)
        user = await auth.authenticate(conn, got[0], now=_now())
        assert user is not None  # noqa: S101 - just issued
        return TokenOut(access_token=got[0], expires_at=got[1], role=user.role)

    @app.post(f"{API}/auth/logout", tags=["auth"], status_code=204)
    async def logout(
        user: Anyone,
        conn: Conn,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Response:
        """Revoke the token this request carries."""
        assert creds is not None  # noqa: S101 - _user checked it
        await auth.revoke(conn, creds.credentials, now=_now())
        return Response(status_code=204)

    @app.get(f"{API}/auth/me", tags=["auth"])
    async def me(user: Anyone) -> UserOut:
        """Who the token belongs to."""
        return UserOut(
            username=user.username, role=user.role, sites=sorted(user.sites), disabled=False
        )

    # -- users (admin) --
    async def _user_out(conn: Conn, username: str) -> UserOut:
        cur = await conn.execute(
            "SELECT username, role, disabled, ARRAY(SELECT site_id FROM user_sites"
            " WHERE user_id = u.id ORDER BY site_id) AS sites FROM users u WHERE username = %s",
            (username,),
        )
        r = await cur.fetchone()
        if r is None:
            raise HTTPException(404, f"there is no user {username!r}")
        return UserOut(**r)

    @app.get(f"{API}/users", tags=["users"])
    async def users(_u: Admin, conn: Conn) -> list[UserOut]:
        """Every user."""
        cur = await conn.execute(
            "SELECT username, role, disabled, ARRAY(SELECT site_id FROM user_sites"
            " WHERE user_id = u.id ORDER BY site_id) AS sites FROM users u ORDER BY username"
        )
        return [UserOut(**r) for r in await cur.fetchall()]

    @app.post(f"{API}/users", tags=["users"], status_code=201)
    async def create_user(body: UserIn, user: Admin, conn: Conn) -> UserOut:
        """Create a user with a role and the facilities it may see."""
        await auth.create_user(
            conn,
            username=body.username,
            role=body.role,
            password=body.password,
            sites=body.sites,
            actor=user.username,
            now=_now(),
        )
        return await _user_out(conn, body.username)

    @app.patch(f"{API}/users/{{username}}", tags=["users"])
    async def change_user(
        username: Annotated[str, Path(max_length=63)], body: UserChange, user: Admin, conn: Conn
    ) -> UserOut:
        """Change a user's role, facilities or password, or disable it."""
        before = await _user_out(conn, username)
        now = _now()
        async with conn.transaction():
            if body.role is not None:
                await conn.execute(
                    "UPDATE users SET role = %s WHERE username = %s", (body.role.value, username)
                )
            if body.password is not None:
                await conn.execute(
                    "UPDATE users SET password_hash = %s WHERE username = %s",
                    (await auth.hash_password(body.password), username),
                )
            if body.disabled is not None:
                await conn.execute(
                    "UPDATE users SET disabled = %s WHERE username = %s", (body.disabled, username)
                )
            if body.disabled or body.password is not None:
                await conn.execute(
                    "UPDATE api_tokens SET revoked_at = %s WHERE revoked_at IS NULL AND user_id ="
                    " (SELECT id FROM users WHERE username = %s)",
                    (now, username),
                )
            if body.sites is not None:
                await conn.execute(
                    "DELETE FROM user_sites WHERE user_id = (SELECT id FROM users"
                    " WHERE username = %s)",
                    (username,),
                )
                for s in sorted(set(body.sites)):
                    await conn.execute(
                        "INSERT INTO user_sites SELECT id, %s FROM users WHERE username = %s",
                        (s, username),
                    )
            after = await _user_out(conn, username)
            changed = after.model_dump(mode="json")
            if body.password is not None:
                changed["password"] = "changed"  # noqa: S105 - recorded, not the password
            await history.append(
                conn,
                at=now,
                actor=user.username,
                site_id="",
                entity="user",
                entity_id=username,
                action="update",
                before=before.model_dump(mode="json"),
                after=changed,
            )
        return after

    # -- facilities and their record --
    @app.get(f"{API}/facilities", tags=["facility record"])
    async def facilities(user: Anyone, conn: Conn) -> list[dict[str, Any]]:
        """The facilities the user may see, by site id: those with a record (`record`: true,
        with its identity; operators get id and name only) and the registry's sites without
        one yet (`record`: false)."""
        sites = None if user.role is Role.ADMIN else sorted(user.sites)
        rows = {r["site_id"]: {**r, "record": True} for r in await records.facilities(conn, sites)}
        cur = await conn.execute(
            "SELECT id, name FROM sites WHERE %(all)s OR id = ANY(%(s)s)",
            {"all": sites is None, "s": sites or []},
        )
        for r in await cur.fetchall():
            rows.setdefault(r["id"], {"site_id": r["id"], "name": r["name"], "record": False})
        out = [rows[k] for k in sorted(rows)]
        if user.role is Role.OPERATOR:
            return [
                {"site_id": r["site_id"], "name": r["name"], "record": r["record"]} for r in out
            ]
        return out

    @app.post(f"{API}/facilities", tags=["facility record"], status_code=201)
    async def create_facility(body: records.FacilityIn, user: Admin, conn: Conn) -> dict[str, Any]:
        """Create a facility's record: identity and SMK3 certificate."""
        return await records.create_facility(conn, body, actor=user.username, now=_now())

    @app.get(f"{API}/facilities/{{site}}", tags=["facility record"])
    async def facility(site: SITE, user: Reader, conn: Conn) -> dict[str, Any]:
        """A facility's identity and SMK3 certificate."""
        _see(user, site)
        got = await records.facility(conn, site)
        if got is None:
            raise HTTPException(404, f"there is no facility {site!r}")
        return got

    @app.patch(f"{API}/facilities/{{site}}", tags=["facility record"])
    async def change_facility(
        site: SITE, body: records.FacilityChange, user: Admin, conn: Conn
    ) -> dict[str, Any]:
        """Change a facility's identity or SMK3 certificate."""
        return await records.update_facility(conn, site, body, actor=user.username, now=_now())

    @app.get(f"{API}/facilities/{{site}}/record", tags=["facility record"])
    async def whole_record(site: SITE, user: Reader, conn: Conn) -> dict[str, Any]:
        """The whole record: identity and every part, oldest entries first."""
        _see(user, site)
        got = await records.facility(conn, site)
        if got is None:
            raise HTTPException(404, f"there is no facility {site!r}")
        out: dict[str, Any] = {"facility": got}
        for e in records.ENTITIES:
            out[e.name] = await records.entries(conn, e, site)
        return out

    @app.get(f"{API}/facilities/{{site}}/history", tags=["facility record"])
    async def record_history(
        site: SITE,
        user: Reader,
        conn: Conn,
        entity: Annotated[str | None, Query(max_length=40)] = None,
        entity_id: Annotated[str | None, Query(max_length=40)] = None,
    ) -> list[dict[str, Any]]:
        """Who changed what in the facility's record, and when, oldest first."""
        _see(user, site)
        rows = await history.read(conn, site=site, entity=entity, entity_id=entity_id)
        return [_history_json(r) for r in rows]

    for ent in records.ENTITIES:
        _entity_routes(app, ent)

    @app.get(f"{API}/facilities/{{site}}/status", tags=["compliance"])
    async def compliance_status(
        site: SITE,
        user: Reader,
        conn: Conn,
        at: Annotated[datetime | None, Query(description="RFC 3339; default now")] = None,
    ) -> dict[str, Any]:
        """The computed compliance status, per facility and asset, with the reasons behind it."""
        _see(user, site)
        when = _window(None, at, timedelta(seconds=1))[1]
        return await status.compute(conn, schema, site, when, ack_sla_s=settings.critical_ack_sla_s)

    # -- alerts and live data --
    @app.get(f"{API}/facilities/{{site}}/alerts", tags=["alerts"])
    async def alerts(
        site: SITE, user: Anyone, conn: Conn, active_only: bool = True
    ) -> list[dict[str, Any]]:
        """The facility's alerts, most urgent first (priority, unacknowledged, oldest)."""
        _see(user, site)
        rows = await AlertStore.on(conn, schema).alerts(site=site, active_only=active_only)
        # When each was last annunciated (its age on the page), from the journal.
        cur = await conn.execute(
            "SELECT alert_id, max(at) AS at FROM alert_journal WHERE alert_id = ANY(%s)"
            " AND actor = 'engine' AND to_state = 'unack' AND from_state NOT IN ('unack', 'ack')"
            " GROUP BY alert_id",
            ([a.id for a in rows],),
        )
        since = {r["alert_id"]: r["at"].isoformat() for r in await cur.fetchall()}
        return [{**_alert_json(a), "annunciated_at": since.get(a.id)} for a in rows]

    async def _alert_of(conn: Conn, user: User, alert_id: int) -> dict[str, Any]:
        cur = await conn.execute("SELECT site_id FROM alerts WHERE id = %s", (alert_id,))
        row = await cur.fetchone()
        if row is None or not user.sees(row["site_id"]):
            raise HTTPException(404, f"there is no alert {alert_id} in your facilities")
        return row

    @app.get(f"{API}/alerts/{{alert_id}}", tags=["alerts"])
    async def alert(alert_id: ENTRY_ID, user: Anyone, conn: Conn) -> dict[str, Any]:
        """An alert and its journal."""
        await _alert_of(conn, user, alert_id)
        store = AlertStore.on(conn, schema)
        rows = [a for a in await store.alerts() if a.id == alert_id]
        entries = await store.journal_rows(alert_id=alert_id)
        return {**_alert_json(rows[0]), "journal": [_journal_json(e) for e in entries]}

    @app.post(f"{API}/alerts/{{alert_id}}/{{action}}", tags=["alerts"])
    async def act(
        alert_id: ENTRY_ID,
        action: AlertAction,
        user: Operator,
        conn: Conn,
        body: Annotated[ActionIn | None, Body()] = None,
    ) -> dict[str, Any]:
        """Acknowledge, shelve (comment and shelve_for_s), unshelve, reset or comment."""
        await _alert_of(conn, user, alert_id)
        body = body or ActionIn(comment="", shelve_for_s=None)
        event = _event(action, body, user.username, to_us(_now()), settings.max_shelve_s)
        try:
            entry = await AlertStore.on(conn, schema).act(
                alert_id, event, max_shelve_s=settings.max_shelve_s
            )
        except ActionError as exc:
            raise HTTPException(409, str(exc)) from None
        return _journal_json(entry)

    @app.get(f"{API}/facilities/{{site}}/sensors", tags=["live data"])
    async def sensors(site: SITE, user: Anyone, conn: Conn) -> list[dict[str, Any]]:
        """The facility's sensors with their newest reading (within the last 30 days)."""
        _see(user, site)
        cur = await conn.execute(
            "SELECT s.id AS sensor, s.gateway_id AS gateway, s.kind, s.unit, s.asset,"
            " s.period_s, s.min_value, s.max_value, l.ts, l.value, l.quality FROM sensors s"
            " LEFT JOIN LATERAL (SELECT ts, value, quality FROM readings r"
            " WHERE r.sensor_key = s.key AND r.ts > now() - interval '30 days'"
            " ORDER BY ts DESC LIMIT 1) l ON true"
            " WHERE s.site_id = %s AND s.retired_at IS NULL ORDER BY s.asset, s.id",
            (site,),
        )
        return [jsonable(r) for r in await cur.fetchall()]

    @app.get(f"{API}/facilities/{{site}}/gateways", tags=["live data"])
    async def gateways(site: SITE, user: Anyone, conn: Conn) -> list[dict[str, Any]]:
        """The facility's gateways: online (their last status), last message, last sequence."""
        _see(user, site)
        cur = await conn.execute(
            "SELECT g.id AS gateway, g.description, s.online, s.status_at, s.last_message_at,"
            " s.last_seq FROM gateways g LEFT JOIN gateway_state s"
            " ON s.site_id = g.site_id AND s.gateway_id = g.id"
            " WHERE g.site_id = %s AND g.retired_at IS NULL ORDER BY g.id",
            (site,),
        )
        return [jsonable(r) for r in await cur.fetchall()]

    @app.get(
        f"{API}/facilities/{{site}}/events",
        tags=["live data"],
        response_class=EventSourceResponse,
        # Its refusals are JSON like every other operation's (the SSE response class would
        # otherwise document them as text/event-stream).
        responses={
            200: {"content": {"text/event-stream": {}}},
            **{
                code: {
                    **spec,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
                    },
                }
                for code, spec in ERRORS.items()
            },
        },
    )
    async def alert_events(
        request: Request,
        site: Annotated[str, Depends(_visible_site)],
        user: Anyone,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        last_event_id: Annotated[
            str | None, Header(alias="Last-Event-ID", max_length=20, pattern=r"^[0-9]+$")
        ] = None,
    ) -> AsyncIterator[ServerSentEvent]:
        """Server-Sent Events: every alert transition and operator action of the facility as
        it is committed (event `alert`, id = the journal seq, data = the entry with the
        alert's current state). Without Last-Event-ID the last 10 minutes come first; with
        it, everything after it: a reconnecting client loses nothing. The stream ends when
        the token expires or is revoked, or the user loses the facility."""
        after = int(last_event_id) if last_event_id is not None else None
        token = creds.credentials if creds else ""

        async def allowed() -> bool:
            async with request.app.state.pool.connection() as conn:
                now_user = await auth.authenticate(conn, token, now=_now())
            return now_user is not None and now_user.sees(site)

        yield ServerSentEvent(comment="tungku alert events", retry=1000)
        async for row in live.events(
            request.app.state.pool,
            request.app.state.live,
            site,
            last_event_id=after,
            now=_now(),
            allowed=allowed,
        ):
            yield ServerSentEvent(
                raw_data=orjson.dumps(jsonable(row), default=_hexed).decode(),
                event="alert",
                id=str(row["seq"]),
            )

    # -- the timeline --
    @app.get(f"{API}/facilities/{{site}}/timeline", tags=["timeline"])
    async def get_timeline(
        site: SITE,
        user: Reader,
        conn: Conn,
        start: From = None,
        end: To = None,
        asset: Annotated[str | None, Query(max_length=100, pattern=records.ASSET_RE)] = None,
        points: Annotated[int, Query(ge=10, le=5000)] = timeline.DEFAULT_POINTS,
    ) -> Response:
        """Readings downsampled to min/max/mean per bucket (series times in epoch ms), alerts
        with transitions, operator actions, permits, incidents, annotations and the limits in
        force, for a facility or asset over a window (default: the last 24 h)."""
        _see(user, site)
        f, t = _window(start, end, timedelta(hours=24))
        return _json(await timeline.timeline(conn, site, f, t, asset=asset, points=points))

    @app.post(f"{API}/facilities/{{site}}/annotations", tags=["timeline"], status_code=201)
    async def annotate(
        site: SITE, body: AnnotationIn, user: Inspector, conn: Conn
    ) -> dict[str, Any]:
        """Add an inspector's note to the facility's timeline."""
        _see(user, site)
        if body.until is not None and body.until < body.at:
            raise RecordError("until is before at")
        now = _now()
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO annotations (site_id, asset, at, until, author, text, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id, site_id, asset, at, until, author, text, created_at",
                (site, body.asset, body.at, body.until, user.username, body.text, now),
            )
            row = jsonable(await cur.fetchone() or {})
            await history.append(
                conn,
                at=now,
                actor=user.username,
                site_id=site,
                entity="annotation",
                entity_id=str(row["id"]),
                action="create",
                before=None,
                after=row,
            )
        return row

    @app.get(
        f"{API}/facilities/{{site}}/timeline/export",
        tags=["timeline"],
        responses={
            200: {
                "content": {
                    "application/json": {},
                    "text/csv": {},
                    "text/html": {},
                    "application/pdf": {},
                }
            }
        },
    )
    async def export(
        request: Request,
        site: SITE,
        user: Reader,
        start: From = None,
        end: To = None,
        asset: Annotated[str | None, Query(max_length=100, pattern=records.ASSET_RE)] = None,
        points: Annotated[int, Query(ge=10, le=5000)] = 300,
        format: ExportFormat = ExportFormat.HTML,
    ) -> Response:
        """The timeline as a report to hand over: with the facility record, its compliance
        status, the journal extract and the verification of both hash chains."""
        _see(user, site)
        f, t = _window(start, end, timedelta(hours=24))
        async with request.app.state.pool.connection() as conn:
            doc = await _report_doc(conn, schema, settings, site, f, t, asset, points, user)
        name = f"tungku-{site}-{f:%Y%m%dT%H%M}-{t:%Y%m%dT%H%M}"
        from dashboards import export as render  # noqa: PLC0415 - matplotlib loads on first use

        if format is ExportFormat.JSON:
            return _json(doc)
        # Plots and PDF take seconds for a large facility (CPU, holding the interpreter): in a
        # process of their own, one at a time, with no database connection held meanwhile.
        if format is ExportFormat.CSV:
            body, media = (await asyncio.to_thread(render.render_csv, doc)).encode(), "text/csv"
        elif format is ExportFormat.HTML:
            body, media = (await _render(request, render.render_html, doc)).encode(), "text/html"
        else:
            body, media = await _render(request, render.render_pdf, doc), "application/pdf"
        return Response(
            body,
            media_type=f"{media}; charset=utf-8" if media.startswith("text/") else media,
            headers={"Content-Disposition": f'attachment; filename="{name}.{format.value}"'},
        )

    # -- the journal --
    @app.get(f"{API}/facilities/{{site}}/journal", tags=["journal"])
    async def journal(
        site: SITE,
        user: Reader,
        conn: Conn,
        start: From = None,
        end: To = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> list[dict[str, Any]]:
        """The alert journal of a facility in a window (default: the last 24 h), seq order."""
        _see(user, site)
        f, t = _window(start, end, timedelta(hours=24))
        cur = await conn.execute(
            "SELECT seq, at, alert_id, site_id, asset, rule_id, subject, actor, action,"
            " from_state, to_state, severity, priority, value, limit_value AS limit, reason,"
            " pack_name, pack_version, detail, prev_hash, hash FROM alert_journal"
            " WHERE site_id = %s AND at >= %s AND at < %s ORDER BY seq LIMIT %s",
            (site, f, t, limit),
        )
        return [_journal_json(r) for r in await cur.fetchall()]

    @app.get(f"{API}/journal/verify", tags=["journal"])
    async def verify(user: Reader, conn: Conn) -> dict[str, Any]:
        """Recompute both hash chains (the alert journal and the record history). The chains
        span every facility: only administrators are told their length."""
        return await _verification(conn, schema, full=user.role is Role.ADMIN)

    # -- reports --
    @app.get(f"{API}/facilities/{{site}}/reports/alarm-kpis", tags=["reports"])
    async def alarm_kpis(
        site: SITE,
        user: Reader,
        conn: Conn,
        start: From = None,
        end: To = None,
        asset: Annotated[str | None, Query(max_length=100, pattern=records.ASSET_RE)] = None,
    ) -> dict[str, Any]:
        """ISA-18.2 alarm KPIs of a facility for a period (default: the last 7 days)."""
        _see(user, site)
        f, t = _window(start, end, timedelta(days=7))
        _max_period(f, t)
        from dashboards import kpi  # noqa: PLC0415

        return await kpi.alarm_kpis(conn, site, f, t, asset=asset)

    @app.get(f"{API}/facilities/{{site}}/reports/compliance-summary", tags=["reports"])
    async def compliance_summary(
        site: SITE, user: Reader, conn: Conn, start: From = None, end: To = None
    ) -> dict[str, Any]:
        """A periodic compliance summary (default: the last 30 days): exceedances of NAB, PSD
        and KTD per work area, time to acknowledge critical alerts, sensor availability, open
        findings and their age."""
        _see(user, site)
        f, t = _window(start, end, timedelta(days=30))
        _max_period(f, t)
        from dashboards import kpi  # noqa: PLC0415

        return await kpi.compliance_summary(conn, site, f, t, ack_sla_s=settings.critical_ack_sla_s)

    # -- rule packs (admin) --
    @app.get(f"{API}/packs", tags=["rule packs"])
    async def packs(_u: Admin, conn: Conn) -> list[dict[str, Any]]:
        """Every rule pack the engine has run, newest first."""
        cur = await conn.execute(
            "SELECT sha256, name, version, effective, loaded_at FROM rule_packs"
            " ORDER BY loaded_at DESC"
        )
        return [jsonable(r) for r in await cur.fetchall()]

    @app.get(f"{API}/packs/{{sha256}}", tags=["rule packs"])
    async def pack(
        sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")], _u: Admin, conn: Conn
    ) -> dict[str, Any]:
        """One rule pack with its full text."""
        cur = await conn.execute(
            "SELECT sha256, name, version, effective, loaded_at, body FROM rule_packs"
            " WHERE sha256 = %s",
            (sha256,),
        )
        row = await cur.fetchone()
        if row is None:
            raise HTTPException(404, f"there is no rule pack {sha256}")
        return jsonable(row)

    @app.post(f"{API}/packs/check", tags=["rule packs"])
    async def check_pack(
        _u: Admin, text: Annotated[str, Body(media_type="text/plain", max_length=1_000_000)]
    ) -> dict[str, Any]:
        """Validate a rule pack's TOML text as the engine would, without loading it."""
        try:
            p = parse_pack(text, "uploaded pack")
        except PackError as exc:
            return {"ok": False, "problems": exc.problems}
        return {
            "ok": True,
            "problems": [],
            "name": p.name,
            "version": p.version,
            "effective": p.effective.isoformat(),
            "rules": len(p.rules),
        }


def _entity_routes(app: FastAPI, e: records.Entity) -> None:
    base = f"{API}/facilities/{{site}}/{e.name}"
    tag: list[str | Enum] = ["facility record"]

    async def list_(site: SITE, user: Reader, conn: Conn) -> list[dict[str, Any]]:
        _see(user, site)
        return await records.entries(conn, e, site)

    async def create(site: SITE, body: Any, user: Admin, conn: Conn) -> dict[str, Any]:
        return await records.create(conn, e, site, body, actor=user.username, now=_now())

    async def one(site: SITE, entry_id: ENTRY_ID, user: Reader, conn: Conn) -> dict[str, Any]:
        _see(user, site)
        return await records.entry(conn, e, site, entry_id)

    async def change(
        site: SITE,
        entry_id: ENTRY_ID,
        body: Any,
        user: Admin,
        conn: Conn,
    ) -> dict[str, Any]:
        return await records.update(conn, e, site, entry_id, body, actor=user.username, now=_now())

    async def entry_history(
        site: SITE, entry_id: ENTRY_ID, user: Reader, conn: Conn
    ) -> list[dict[str, Any]]:
        _see(user, site)
        await records.entry(conn, e, site, entry_id)
        rows = await history.read(conn, site=site, entity=e.name, entity_id=str(entry_id))
        return [_history_json(r) for r in rows]

    # Annotations are strings here (postponed evaluation); FastAPI resolves them in the module's
    # globals, where this entity's models are not: give it the classes themselves.
    create.__annotations__["body"] = e.new
    change.__annotations__["body"] = e.change
    title = e.title.lower()
    routes: list[tuple[str, Callable[..., Awaitable[Any]], str, str, int, str, str]] = [
        ("", list_, "GET", "list", 200, f"{e.title} of a facility", ""),
        ("", create, "POST", "create", 201, f"Add to the {title}", e.new.__doc__ or ""),
        ("/{entry_id}", one, "GET", "get", 200, f"One entry of the {title}", ""),
        (
            "/{entry_id}",
            change,
            "PATCH",
            "change",
            200,
            f"Change an entry of the {title}",
            e.change.__doc__ or "",
        ),
        (
            "/{entry_id}/history",
            entry_history,
            "GET",
            "history",
            200,
            f"Who changed this entry of the {title}",
            "",
        ),
    ]
    for suffix, fn, method, verb, status_code, summary, description in routes:
        app.add_api_route(
            base + suffix,
            fn,
            methods=[method],
            tags=tag,
            status_code=status_code,
            name=f"{verb} {e.name}",
            summary=summary,
            operation_id=f"{verb}_{e.table}",
            description=description,
        )


_RENDER_LOCK: Final = threading.Lock()


async def _render(
    request: Request, fn: Callable[[dict[str, Any]], Any], doc: dict[str, Any]
) -> Any:
    """fn(doc) in the app's report process (started on first use, kept for the next)."""
    with _RENDER_LOCK:
        if request.app.state.renderer is None:
            request.app.state.renderer = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
    return await asyncio.get_running_loop().run_in_executor(request.app.state.renderer, fn, doc)


def _max_period(f: datetime, t: datetime) -> None:
    if t - f > timedelta(days=400):
        raise RecordError("a report period may span at most 400 days")


def _event(
    action: AlertAction, body: ActionIn, user: str, now: int, max_shelve_s: float
) -> lifecycle.Event:
    why = body.comment
    match action:
        case AlertAction.ACK:
            return lifecycle.Acknowledge(at_us=now, actor=user, comment=why)
        case AlertAction.SHELVE:
            if not why or body.shelve_for_s is None:
                raise RecordError("to shelve an alert give a comment (why) and shelve_for_s")
            if body.shelve_for_s > max_shelve_s:
                raise RecordError(f"shelve_for_s: at most {max_shelve_s:g} s")
            return lifecycle.Shelve(
                at_us=now, actor=user, reason=why, until_us=now + int(body.shelve_for_s * 1e6)
            )
        case AlertAction.UNSHELVE:
            return lifecycle.Unshelve(at_us=now, actor=user, reason=why)
        case AlertAction.RESET:
            return lifecycle.Reset(at_us=now, actor=user, reason=why)
        case AlertAction.COMMENT:
            if not why:
                raise RecordError("a comment needs its text in 'comment'")
            return lifecycle.Comment(at_us=now, actor=user, text=why)


def _alert_json(a: Any) -> dict[str, Any]:
    s = a.state
    return jsonable(
        {
            "id": a.id,
            "site_id": a.site_id,
            "asset": a.asset,
            "rule_id": a.rule_id,
            "subject": a.subject,
            "title": a.title,
            "state": s.state.value,
            "condition_active": s.condition_active,
            "severity": s.severity.value if s.severity else None,
            "priority": s.priority.value,
            "latched": s.latched,
            "acked": s.acked,
            "shelved_until": _iso_us(s.shelved_until_us),
            "shelve_reason": s.shelve_reason,
            "activations": s.activations,
            "value": a.value,
            "limit": a.limit,
            "escalated_by": list(a.escalated_by),
            "pack_version": a.pack_version,
            "first_active_at": _iso_us(a.first_active_us),
            "last_change_at": _iso_us(s.last_change_us),
        }
    )


def _iso_us(us: int | None) -> str | None:
    return None if us is None else datetime.fromtimestamp(us / 1e6, UTC).isoformat()


def _journal_json(e: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in e.items() if k not in ("at_us", "prev_hash", "hash", "at")}
    at = e.get("at") or datetime.fromtimestamp(e["at_us"] / 1e6, UTC)
    out["at"] = at.isoformat()
    out["hash"] = bytes(e["hash"]).hex()
    if "prev_hash" in e:
        out["prev_hash"] = bytes(e["prev_hash"]).hex()
    return out


def _history_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": r["seq"],
        "at": r["at"].isoformat(),
        "actor": r["actor"],
        "site_id": r["site_id"],
        "entity": r["entity"],
        "entity_id": r["entity_id"],
        "action": r["action"],
        "before": r["before"],
        "after": r["after"],
        "hash": bytes(r["hash"]).hex(),
    }


async def _verification(
    conn: psycopg.AsyncConnection[Any], schema: str, *, full: bool
) -> dict[str, Any]:
    """Both chains recomputed (each hashes in a worker thread, off the event loop)."""
    j = await AlertStore.on(conn, schema).verify_journal()
    r = await history.verify_all(conn)
    return {
        name: {"ok": v.ok, "entries": v.entries if full else None, "problems": list(v.problems)}
        for name, v in (("alert_journal", j), ("record_history", r))
    }


async def _report_doc(
    conn: psycopg.AsyncConnection[Any],
    schema: str,
    settings: Settings,
    site: str,
    f: datetime,
    t: datetime,
    asset: str | None,
    points: int,
    user: User,
) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(
        orjson.dumps(await timeline.timeline(conn, site, f, t, asset=asset, points=points))
    )
    doc["generated_at"] = _now().isoformat()
    doc["generated_by"] = user.username
    doc["facility"] = await records.facility(conn, site)
    doc["licences"] = await records.entries(conn, records.BY_NAME["licences"], site)
    doc["findings"] = await records.entries(conn, records.BY_NAME["findings"], site)
    doc["status"] = await status.compute(
        conn, schema, site, t, ack_sla_s=settings.critical_ack_sla_s
    )
    cur = await conn.execute(
        "SELECT seq, at, actor, action, rule_id, subject, from_state, to_state, hash"
        " FROM alert_journal WHERE site_id = %s AND at >= %s AND at < %s ORDER BY seq"
        " LIMIT 5000",
        (site, f, t),
    )
    entries = [{**jsonable(r), "hash": bytes(r["hash"]).hex()} for r in await cur.fetchall()]
    verification = await _verification(conn, schema, full=user.role is Role.ADMIN)
    doc["journal"] = {"entries": entries, "verification": verification}
    return doc


__all__ = ["create_app"]
