"""The facility record (DOMAIN.md §5): what each part holds, how it is validated, and how it is
created, read and updated with its history.

Each part of the record is an `Entity`: a table, the model a new entry must satisfy and the
model of a change (every field optional). Entries are never deleted: a record is evidence; a
closed permit or finding is closed by setting its end. Every create and update is appended to
the record history (`dashboards.history`) in the same transaction, with the user, the entry
before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from dashboards import history

SITE_RE: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class RecordError(ValueError):
    """A change the record refuses; `status` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


#: Times and dates the record accepts. Far outside them is a typing error, and near year 1 or
#: 9999 a UTC offset overflows Python's datetime.
MIN_YEAR: Final = 1900
MAX_YEAR: Final = 9000


def _aware(v: datetime) -> datetime:
    if v.tzinfo is None:
        raise ValueError("a time needs its UTC offset, e.g. 2026-12-07T08:00:00Z")
    if not MIN_YEAR <= v.year < MAX_YEAR:
        raise ValueError(f"a time must be between the years {MIN_YEAR} and {MAX_YEAR}")
    return v.astimezone(UTC)


def _sane_date(v: date) -> date:
    if not MIN_YEAR <= v.year < MAX_YEAR:
        raise ValueError(f"a date must be between the years {MIN_YEAR} and {MAX_YEAR}")
    return v


Day = Annotated[date, AfterValidator(_sane_date)]


Time = Annotated[datetime, AfterValidator(_aware)]
Text = Annotated[str, Field(max_length=2000)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
#: Printable text: the registry accepts any asset name, and so does the record.
ASSET_RE: Final = r"^[^\x00-\x1f\x7f]*$"
Asset = Annotated[str, Field(max_length=100, pattern=ASSET_RE)]
AssetName = Annotated[str, Field(min_length=1, max_length=100, pattern=ASSET_RE)]


def no_nul(value: Any) -> Any:
    """Refuse NUL characters anywhere in a request's strings (PostgreSQL text cannot hold
    them); raises ValueError naming the problem."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    if isinstance(value, dict):
        for v in value.values():
            no_nul(v)
    elif isinstance(value, list):
        for v in value:
            no_nul(v)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return no_nul(data)


class _Change(_Model):
    """A change: only the fields given are changed."""


def _ordered(a: Any, b: Any, what: str) -> None:
    if a is not None and b is not None and b < a:
        raise ValueError(what)


# --- identity and SMK3 ------------------------------------------------------------------------


class Smk3Level(StrEnum):
    """SMK3 assessment levels (PP 50/2012): initial 64, transitional 122, advanced 166 criteria."""

    INITIAL = "initial"
    TRANSITIONAL = "transitional"
    ADVANCED = "advanced"


class FacilityIn(_Model):
    """A facility's identity and SMK3 certificate."""

    site_id: str = Field(pattern=SITE_RE, description="the site id readings and alerts carry")
    name: Name
    company: Name
    iui_number: str = Field("", max_length=60, description="industrial business licence (IUI)")
    oss_nib: str = Field("", pattern=r"^([0-9]{13})?$", description="OSS business id, 13 digits")
    kbli: str = Field("", pattern=r"^([0-9]{5})?$", description="KBLI activity code, 5 digits")
    estate: str = Field("", max_length=200, description="industrial estate, e.g. IMIP")
    address: Text = ""
    smk3_level: Smk3Level | None = None
    smk3_certificate: str = Field("", max_length=100)
    smk3_audit_on: Day | None = None
    smk3_expires_on: Day | None = None

    @model_validator(mode="after")
    def _dates(self) -> FacilityIn:
        _ordered(
            self.smk3_audit_on, self.smk3_expires_on, "smk3_expires_on is before smk3_audit_on"
        )
        return self


class FacilityChange(_Change):
    """A change of identity or SMK3 certificate."""

    name: Name | None = None
    company: Name | None = None
    iui_number: str | None = Field(None, max_length=60)
    oss_nib: str | None = Field(None, pattern=r"^([0-9]{13})?$")
    kbli: str | None = Field(None, pattern=r"^([0-9]{5})?$")
    estate: str | None = Field(None, max_length=200)
    address: Text | None = None
    smk3_level: Smk3Level | None = None
    smk3_certificate: str | None = Field(None, max_length=100)
    smk3_audit_on: Day | None = None
    smk3_expires_on: Day | None = None


# --- the parts of the record ------------------------------------------------------------------


class LicenceIn(_Model):
    """A licence or permit of the business (IUI, environmental, ...)."""

    kind: Name
    number: Name
    issuer: str = Field("", max_length=200)
    issued_on: Day
    expires_on: Day | None = None
    notes: Text = ""

    @model_validator(mode="after")
    def _dates(self) -> LicenceIn:
        _ordered(self.issued_on, self.expires_on, "expires_on is before issued_on")
        return self


class LicenceChange(_Change):
    """A change of a licence."""

    number: Name | None = None
    issuer: str | None = Field(None, max_length=200)
    expires_on: Day | None = None
    notes: Text | None = None


class PermitKind(StrEnum):
    """Work permits; a hot-work permit is what the hot-work interlock rules see."""

    HOT_WORK = "hot_work"
    CONFINED_SPACE = "confined_space"
    WORK_AT_HEIGHT = "work_at_height"
    ELECTRICAL = "electrical"


class PermitIn(_Model):
    """A work permit on an asset and the work areas it lists, open in [opened_at, closed_at)."""

    kind: PermitKind = PermitKind.HOT_WORK
    asset: AssetName
    areas: list[Asset] = Field(default_factory=list, max_length=50)
    opened_at: Time
    closed_at: Time | None = None
    description: Text = ""

    @model_validator(mode="after")
    def _times(self) -> PermitIn:
        if self.closed_at is not None and self.closed_at <= self.opened_at:
            raise ValueError("closed_at must be after opened_at")
        return self


class PermitChange(_Change):
    """Close a permit, or change its areas or description."""

    areas: list[Asset] | None = Field(None, max_length=50)
    closed_at: Time | None = None
    description: Text | None = None


class ReportIn(_Model):
    """A periodic industry report (SIINas): late while its due time has passed unsubmitted."""

    period: str = Field(pattern=r"^[0-9]{4}-(S[12]|Q[1-4]|[01][0-9])$", examples=["2026-S2"])
    due_at: Time
    submitted_at: Time | None = None
    channel: str = Field("SIINas", max_length=60)
    reference: str = Field("", max_length=200)


class ReportChange(_Change):
    """Record a submission, or move a due date."""

    due_at: Time | None = None
    submitted_at: Time | None = None
    reference: str | None = Field(None, max_length=200)


class WorkEnvTestIn(_Model):
    """A work-environment test result (Permenaker 5/2018), against its limit and the limit's
    source."""

    area: Name
    parameter: Name
    tested_on: Day
    result: float = Field(ge=-1e12, le=1e12)
    unit: Annotated[str, Field(min_length=1, max_length=30)]
    limit_value: float | None = Field(None, ge=-1e12, le=1e12)
    limit_source: str = Field("", max_length=300)
    laboratory: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _source(self) -> WorkEnvTestIn:
        if self.limit_value is not None and not self.limit_source:
            raise ValueError("a limit_value needs its limit_source (a regulation, or [A])")
        return self


class WorkEnvTestChange(_Change):
    """Correct a test's laboratory or limit source."""

    laboratory: str | None = Field(None, max_length=200)
    limit_source: str | None = Field(None, max_length=300)


class InspectionKind(StrEnum):
    """Forms of supervision (Permenperin 25/2021)."""

    MONITORING = "monitoring"
    AUDIT = "audit"
    INSPECTION = "inspection"
    SURVEILLANCE = "surveillance"
    TECHNICAL_VERIFICATION = "technical_verification"


class InspectionIn(_Model):
    """An inspection or audit by an agency."""

    kind: InspectionKind
    agency: Name
    inspected_on: Day
    summary: Text = ""


class InspectionChange(_Change):
    """Correct an inspection's summary."""

    summary: Text | None = None


class FindingIn(_Model):
    """A finding on an asset, with its corrective action and due date; open until closed."""

    asset: AssetName
    description: Annotated[str, Field(min_length=1, max_length=2000)]
    inspection_id: int | None = Field(None, ge=1, le=2**62)
    agency: str = Field("", max_length=200)
    corrective_action: Text = ""
    opened_at: Time
    due_at: Time | None = None
    closed_at: Time | None = None

    @model_validator(mode="after")
    def _times(self) -> FindingIn:
        if self.closed_at is not None and self.closed_at <= self.opened_at:
            raise ValueError("closed_at must be after opened_at")
        if self.due_at is not None and self.due_at < self.opened_at:
            raise ValueError("due_at is before opened_at")
        return self


class FindingChange(_Change):
    """Record a corrective action, move its due date, or close the finding."""

    corrective_action: Text | None = None
    due_at: Time | None = None
    closed_at: Time | None = None


class InvestigationStatus(StrEnum):
    """Where an incident's investigation stands."""

    OPEN = "open"
    INVESTIGATING = "investigating"
    CLOSED = "closed"


class IncidentIn(_Model):
    """An incident: casualties, the alerts linked to it and its investigation status."""

    asset: Asset = ""
    occurred_at: Time
    kind: Name
    fatalities: int = Field(0, ge=0, le=100_000)
    injuries: int = Field(0, ge=0, le=100_000)
    description: Text = ""
    investigation_status: InvestigationStatus = InvestigationStatus.OPEN
    alert_ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(
        default_factory=list, max_length=500
    )


class IncidentChange(_Change):
    """Update an incident's casualties, description, status or linked alerts."""

    fatalities: int | None = Field(None, ge=0, le=100_000)
    injuries: int | None = Field(None, ge=0, le=100_000)
    description: Text | None = None
    investigation_status: InvestigationStatus | None = None
    alert_ids: list[Annotated[int, Field(ge=1, le=2**62)]] | None = Field(None, max_length=500)


class SanctionKind(StrEnum):
    """Sanctions a facility can receive."""

    WARNING_LETTER = "warning_letter"
    STOP_ORDER = "stop_order"
    FINE = "fine"
    CRIMINAL_CASE = "criminal_case"


class SanctionIn(_Model):
    """A sanction; in force from issued_on until lifted_on."""

    kind: SanctionKind
    issued_on: Day
    issuer: str = Field("", max_length=200)
    reference: str = Field("", max_length=200)
    amount_idr: int | None = Field(None, ge=0, le=10**15)
    description: Text = ""
    lifted_on: Day | None = None

    @model_validator(mode="after")
    def _dates(self) -> SanctionIn:
        _ordered(self.issued_on, self.lifted_on, "lifted_on is before issued_on")
        if self.amount_idr is not None and self.kind is not SanctionKind.FINE:
            raise ValueError("amount_idr belongs to a fine only")
        return self


class SanctionChange(_Change):
    """Lift a sanction or correct its reference."""

    reference: str | None = Field(None, max_length=200)
    description: Text | None = None
    lifted_on: Day | None = None


@dataclass(frozen=True, slots=True)
class Entity:
    """One part of the facility record."""

    name: str  # URL segment and history entity
    table: str
    new: type[_Model]
    change: type[_Change]
    columns: tuple[str, ...]  # what the API returns, besides id and site_id
    order: str
    title: str


ENTITIES: Final = (
    Entity(
        "licences",
        "licences",
        LicenceIn,
        LicenceChange,
        ("kind", "number", "issuer", "issued_on", "expires_on", "notes"),
        "issued_on",
        "Licences",
    ),
    Entity(
        "permits",
        "permits",
        PermitIn,
        PermitChange,
        ("kind", "asset", "areas", "opened_at", "closed_at", "issued_by", "description"),
        "opened_at",
        "Work permits",
    ),
    Entity(
        "periodic-reports",
        "periodic_reports",
        ReportIn,
        ReportChange,
        ("period", "due_at", "submitted_at", "channel", "reference"),
        "due_at",
        "Periodic reports",
    ),
    Entity(
        "work-env-tests",
        "work_env_tests",
        WorkEnvTestIn,
        WorkEnvTestChange,
        (
            "area",
            "parameter",
            "tested_on",
            "result",
            "unit",
            "limit_value",
            "limit_source",
            "laboratory",
        ),
        "tested_on",
        "Work-environment tests",
    ),
    Entity(
        "inspections",
        "inspections",
        InspectionIn,
        InspectionChange,
        ("kind", "agency", "inspected_on", "summary"),
        "inspected_on",
        "Inspections",
    ),
    Entity(
        "findings",
        "findings",
        FindingIn,
        FindingChange,
        (
            "inspection_id",
            "asset",
            "description",
            "agency",
            "corrective_action",
            "opened_at",
            "due_at",
            "closed_at",
        ),
        "opened_at",
        "Findings",
    ),
    Entity(
        "incidents",
        "incidents",
        IncidentIn,
        IncidentChange,
        (
            "asset",
            "occurred_at",
            "kind",
            "fatalities",
            "injuries",
            "description",
            "investigation_status",
            "alert_ids",
        ),
        "occurred_at",
        "Incidents",
    ),
    Entity(
        "sanctions",
        "sanctions",
        SanctionIn,
        SanctionChange,
        ("kind", "issued_on", "issuer", "reference", "amount_idr", "description", "lifted_on"),
        "issued_on",
        "Sanctions",
    ),
)
BY_NAME: Final = {e.name: e for e in ENTITIES}
FACILITY_COLUMNS: Final = (
    "site_id",
    "name",
    "company",
    "iui_number",
    "oss_nib",
    "kbli",
    "estate",
    "address",
    "smk3_level",
    "smk3_certificate",
    "smk3_audit_on",
    "smk3_expires_on",
    "updated_at",
)


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON-friendly values (dates and times as ISO 8601 strings)."""
    return {k: v.isoformat() if isinstance(v, date | datetime) else v for k, v in row.items()}


async def _fetch(
    conn: psycopg.AsyncConnection[Any], query: sql.Composed | sql.SQL, params: Any
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return await cur.fetchall()


# --- facilities -------------------------------------------------------------------------------


async def facilities(
    conn: psycopg.AsyncConnection[Any], sites: list[str] | None
) -> list[dict[str, Any]]:
    """Facilities (of these sites; all when None), by site id."""
    q = sql.SQL(
        "SELECT {} FROM facilities WHERE %(all)s OR site_id = ANY(%(s)s) ORDER BY site_id"
    ).format(sql.SQL(", ").join(map(sql.Identifier, FACILITY_COLUMNS)))
    return [jsonable(r) for r in await _fetch(conn, q, {"all": sites is None, "s": sites or []})]


async def facility(conn: psycopg.AsyncConnection[Any], site: str) -> dict[str, Any] | None:
    """One facility's identity and SMK3 certificate, or None."""
    rows = await facilities(conn, [site])
    return rows[0] if rows else None


async def create_facility(
    conn: psycopg.AsyncConnection[Any], new: FacilityIn, *, actor: str, now: datetime
) -> dict[str, Any]:
    """Create a facility; RecordError 409 when it exists."""
    values = new.model_dump(mode="json")
    values["smk3_level"] = values["smk3_level"] or ""
    async with conn.transaction():
        if await facility(conn, new.site_id) is not None:
            raise RecordError(f"facility {new.site_id!r} exists already", 409)
        cols = [*values, "updated_at"]
        await conn.execute(
            sql.SQL("INSERT INTO facilities ({}) VALUES ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.Placeholder() * len(cols)),
            ),
            [*values.values(), now],
        )
        after = await facility(conn, new.site_id)
        await history.append(
            conn,
            at=now,
            actor=actor,
            site_id=new.site_id,
            entity="facility",
            entity_id=new.site_id,
            action="create",
            before=None,
            after=after,
        )
    assert after is not None  # noqa: S101 - inserted above
    return after


async def update_facility(
    conn: psycopg.AsyncConnection[Any],
    site: str,
    change: FacilityChange,
    *,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Change a facility's identity or certificate; RecordError 404 when it does not exist."""
    values = change.model_dump(mode="json", exclude_unset=True)
    if "smk3_level" in values:
        values["smk3_level"] = values["smk3_level"] or ""
    for k in ("name", "company"):
        if k in values and values[k] is None:
            raise RecordError(f"{k} cannot be removed")
    for k, v in list(values.items()):
        if v is None and k not in ("smk3_audit_on", "smk3_expires_on"):
            values[k] = ""
    async with conn.transaction():
        rows = await _fetch(
            conn,
            sql.SQL("SELECT {} FROM facilities WHERE site_id = %s FOR UPDATE").format(
                sql.SQL(", ").join(map(sql.Identifier, FACILITY_COLUMNS))
            ),
            (site,),
        )
        if not rows:
            raise RecordError(f"there is no facility {site!r}", 404)
        before = jsonable(rows[0])
        merged = {**before, **values}
        if (
            merged["smk3_audit_on"]
            and merged["smk3_expires_on"]
            and merged["smk3_expires_on"] < merged["smk3_audit_on"]
        ):
            raise RecordError("smk3_expires_on is before smk3_audit_on")
        if values:
            await conn.execute(
                sql.SQL("UPDATE facilities SET {}, updated_at = %s WHERE site_id = %s").format(
                    sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values)
                ),
                [*values.values(), now, site],
            )
        after = await facility(conn, site)
        await history.append(
            conn,
            at=now,
            actor=actor,
            site_id=site,
            entity="facility",
            entity_id=site,
            action="update",
            before=before,
            after=after,
        )
    assert after is not None  # noqa: S101 - exists: locked above
    return after


# --- the parts ------------------------------------------------------------------------------


def _select(e: Entity) -> sql.Composed:
    return sql.SQL("SELECT id, site_id, {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, e.columns)), sql.Identifier(e.table)
    )


async def entries(conn: psycopg.AsyncConnection[Any], e: Entity, site: str) -> list[dict[str, Any]]:
    """A part of the record of one facility, oldest first."""
    q = sql.SQL("{} WHERE site_id = %s ORDER BY {}, id").format(_select(e), sql.Identifier(e.order))
    return [jsonable(r) for r in await _fetch(conn, q, (site,))]


async def entry(
    conn: psycopg.AsyncConnection[Any], e: Entity, site: str, entry_id: int, *, lock: bool = False
) -> dict[str, Any]:
    """One entry; RecordError 404 when the facility has no such entry."""
    q = sql.SQL("{} WHERE site_id = %s AND id = %s{}").format(
        _select(e), sql.SQL(" FOR UPDATE") if lock else sql.SQL("")
    )
    rows = await _fetch(conn, q, (site, entry_id))
    if not rows:
        raise RecordError(f"facility {site!r} has no {e.name} entry {entry_id}", 404)
    return jsonable(rows[0])


async def _check_refs(
    conn: psycopg.AsyncConnection[Any], e: Entity, site: str, values: dict[str, Any]
) -> None:
    if values.get("inspection_id") is not None:
        await entry(conn, BY_NAME["inspections"], site, values["inspection_id"])
    ids = values.get("alert_ids")
    if ids:
        rows = await _fetch(
            conn, sql.SQL("SELECT id FROM alerts WHERE site_id = %s AND id = ANY(%s)"), (site, ids)
        )
        missing = sorted(set(ids) - {r["id"] for r in rows})
        if missing:
            raise RecordError(f"alert_ids: facility {site!r} has no alert {missing[0]}")


async def create(
    conn: psycopg.AsyncConnection[Any],
    e: Entity,
    site: str,
    new: _Model,
    *,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Add an entry to a facility's record and its history; returns it."""
    values = new.model_dump(mode="python")
    values = {k: (v.value if isinstance(v, StrEnum) else v) for k, v in values.items()}
    if e.name == "permits":
        values["issued_by"] = actor
    async with conn.transaction():
        if await facility(conn, site) is None:
            raise RecordError(f"there is no facility {site!r}", 404)
        await _check_refs(conn, e, site, values)
        if e.name == "periodic-reports":
            dup = await _fetch(
                conn,
                sql.SQL("SELECT id FROM periodic_reports WHERE site_id = %s AND period = %s"),
                (site, values["period"]),
            )
            if dup:
                raise RecordError(
                    f"facility {site!r} has a report for {values['period']} already"
                    f" (entry {dup[0]['id']}): change that one",
                    409,
                )
        cols = ["site_id", *values]
        rows = await _fetch(
            conn,
            sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
                sql.Identifier(e.table),
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.Placeholder() * len(cols)),
            ),
            [site, *values.values()],
        )
        after = await entry(conn, e, site, int(rows[0]["id"]))
        await history.append(
            conn,
            at=now,
            actor=actor,
            site_id=site,
            entity=e.name,
            entity_id=str(after["id"]),
            action="create",
            before=None,
            after=after,
        )
    return after


async def update(
    conn: psycopg.AsyncConnection[Any],
    e: Entity,
    site: str,
    entry_id: int,
    change: _Change,
    *,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Change an entry; the whole entry is validated again after the change."""
    values = change.model_dump(mode="python", exclude_unset=True)
    values = {k: (v.value if isinstance(v, StrEnum) else v) for k, v in values.items()}
    async with conn.transaction():
        before = await entry(conn, e, site, entry_id, lock=True)
        await _check_refs(conn, e, site, values)
        merged = {
            k: v
            for k, v in {**before, **change.model_dump(mode="json", exclude_unset=True)}.items()
            if k in e.new.model_fields
        }
        try:
            e.new.model_validate(merged)
        except ValueError as exc:
            raise RecordError(
                f"after this change the entry would be invalid: {_first(exc)}"
            ) from None
        if values:
            await conn.execute(
                sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
                    sql.Identifier(e.table),
                    sql.SQL(", ").join(
                        sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values
                    ),
                ),
                [*values.values(), entry_id],
            )
        after = await entry(conn, e, site, entry_id)
        await history.append(
            conn,
            at=now,
            actor=actor,
            site_id=site,
            entity=e.name,
            entity_id=str(entry_id),
            action="update",
            before=before,
            after=after,
        )
    return after


def _first(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        err = errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", exc)).removeprefix("Value error, ")
        return f"{loc}: {msg}" if loc else msg
    return str(exc)


def now_utc() -> datetime:
    """The wall clock, timezone-aware."""
    return datetime.now(UTC)


__all__ = ["BY_NAME", "ENTITIES", "Entity", "RecordError"]
