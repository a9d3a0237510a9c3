"""The minimal facility record as the rule engine sees it: permits and escalation reasons.

Owns `Compliance`, a snapshot of permits, open inspection findings, SMK3 certificate expiry
and periodic reports, answered at an event time. Pure: built from rows the store loaded; no
I/O and no clock — every question takes the time it is asked about, so replaying readings
gives the same answers as the live run did.

Escalation (DOMAIN.md §3, last bullet, a design choice): an alert's priority is raised one
level where, at the alert's event time, the facility has an open inspection finding on the
same asset, an expired SMK3 certificate, or a periodic report past its due date and not
submitted by then.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def escalation(self, site: str, asset: str, t_us: int) -> list[str]:
        """Reasons, at event time t, to raise an alert on this asset one priority level."""
        reasons = [
            f"open inspection finding on {asset}"
            for f in self.findings
            if f.site == site and f.asset == asset and f.open_at(t_us)
        ][:1]
        expiry = self.smk3_expires_us.get(site)
        if expiry is not None and t_us >= expiry:
            reasons.append("SMK3 certificate expired")
        late = [r.period for r in self.reports if r.site == site and r.late_at(t_us)]
        if late:
            reasons.append(f"periodic report late: {', '.join(sorted(late))}")
        return reasons
