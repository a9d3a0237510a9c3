"""The minimal facility record as the rule engine sees it: permits and escalation reasons.

Owns `Compliance`, a snapshot of permits, open inspection findings, SMK3 certificate expiry
and periodic reports, answered at an event time. Pure: built from rows the store loaded; no
I/O and no clock — every question takes the time it is asked about, so replaying readings
gives the same answers as the live run did.

`Compliance.reasons` is the record's part of a facility's compliance status (the API adds the
live part: unacknowledged critical alerts, sensor coverage): each `Reason` names its asset
('' for the whole facility), whether it makes the facility non-compliant or asks for
attention, and whether it escalates alerts.

Escalation (DOMAIN.md §3, last bullet, a design choice) uses those reasons: an alert's priority
is raised one level where, at the alert's event time, the facility has an open inspection
finding on the same asset, an expired SMK3 certificate, or a periodic report past its due date
and not submitted by then. Only record reasons escalate: they are answered at event time, so a
replay escalates as the live run did; the live reasons are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True, slots=True)
class Permit:
    """A hot-work permit: it covers its asset and the listed work areas in [opened, closed)."""

    site: str
    asset: str
    areas: tuple[str, ...]
    opened_us: int
    closed_us: int | None = None
    id: int = 0

    def covers(self, site: str, asset: str) -> bool:
        """True when this permit covers the asset (the furnace itself or a listed area)."""
        return site == self.site and (asset == self.asset or asset in self.areas)

    def open_at(self, t_us: int) -> bool:
        """True when the permit is open at event time t."""
        return self.opened_us <= t_us and (self.closed_us is None or t_us < self.closed_us)


@dataclass(frozen=True, slots=True)
class Finding:
    """An inspection finding on an asset, open in [opened, closed)."""

    site: str
    asset: str
    opened_us: int
    closed_us: int | None = None
    due_us: int | None = None
    id: int = 0

    def open_at(self, t_us: int) -> bool:
        """True when the finding is open at event time t."""
        return self.opened_us <= t_us and (self.closed_us is None or t_us < self.closed_us)


@dataclass(frozen=True, slots=True)
class Report:
    """A periodic report: late from its due time until it is submitted."""

    site: str
    period: str
    due_us: int
    submitted_us: int | None = None

    def late_at(self, t_us: int) -> bool:
        """True when, at t, the report is past due and not yet submitted."""
        return self.due_us <= t_us and (self.submitted_us is None or t_us < self.submitted_us)


NON_COMPLIANT: Final = "non_compliant"
ATTENTION: Final = "attention"


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason behind a compliance status."""

    code: str
    severity: str  # NON_COMPLIANT or ATTENTION
    asset: str  # '' for the whole facility
    message: str
    since_us: int | None = None
    escalates: bool = False


@dataclass(frozen=True, slots=True)
class Compliance:
    """Everything the engine asks of the facility record."""

    permits: tuple[Permit, ...] = ()
    findings: tuple[Finding, ...] = ()
    reports: tuple[Report, ...] = ()
    #: site -> SMK3 certificate expiry (end of validity, event-time microseconds)
    smk3_expires_us: dict[str, int] = field(default_factory=dict)

    def permits_for(self, site: str, asset: str) -> list[Permit]:
        """Permits that cover this asset, open or not."""
        return [p for p in self.permits if p.covers(site, asset)]

    def reasons(self, site: str, t_us: int) -> list[Reason]:
        """The record's reasons, at event time t, why this facility is not simply compliant."""
        out: list[Reason] = []
        for f in self.findings:
            if f.site != site or not f.open_at(t_us):
                continue
            if f.due_us is not None and t_us >= f.due_us:
                out.append(
                    Reason(
                        "finding_overdue",
                        NON_COMPLIANT,
                        f.asset,
                        f"inspection finding {f.id} on {f.asset} is past its due date",
                        f.due_us,
                        escalates=True,
                    )
                )
            else:
                out.append(
                    Reason(
                        "finding_open",
                        ATTENTION,
                        f.asset,
                        f"open inspection finding {f.id} on {f.asset}",
                        f.opened_us,
                        escalates=True,
                    )
                )
        expiry = self.smk3_expires_us.get(site)
        if expiry is not None and t_us >= expiry:
            out.append(
                Reason(
                    "smk3_expired",
                    NON_COMPLIANT,
                    "",
                    "SMK3 certificate expired",
                    expiry,
                    escalates=True,
                )
            )
        out.extend(
            Reason(
                "report_late",
                NON_COMPLIANT,
                "",
                f"periodic report {r.period} is late",
                r.due_us,
                escalates=True,
            )
            for r in sorted(self.reports, key=lambda r: r.period)
            if r.site == site and r.late_at(t_us)
        )
        return out

    def escalation(self, site: str, asset: str, t_us: int) -> list[str]:
        """Reasons, at event time t, to raise an alert on this asset one priority level."""
        reasons = [r for r in self.reasons(site, t_us) if r.escalates]
        out = [
            f"open inspection finding on {asset}"
            for r in reasons
            if r.code in ("finding_open", "finding_overdue") and r.asset == asset
        ][:1]
        if any(r.code == "smk3_expired" for r in reasons):
            out.append("SMK3 certificate expired")
        late = [r.message.split()[2] for r in reasons if r.code == "report_late"]
        if late:
            out.append(f"periodic report late: {', '.join(sorted(late))}")
        return out
