"""Prometheus metrics of the ingest service, on a registry of its own.

Owns the metric names and their meaning; exposing them (HTTP endpoint, text file) is done by
the service with prometheus_client's own helpers. `parse_metrics` reads an exposition back,
for `tungku monitor` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class IngestMetrics:
    """The service's metrics."""

    registry: CollectorRegistry
    messages_received: Counter
    messages_acked: Counter
    readings_accepted: Counter
    readings_inserted: Counter
    readings_rejected: Counter
    readings_duplicate: Counter
    messages_rejected: Counter
    batches_committed: Counter
    batch_rows: Histogram
    commit_seconds: Histogram
    ingest_lag_seconds: Histogram
    event_lag_seconds: Gauge
    unacked_messages: Gauge
    inbox_messages: Gauge
    inbox_stalls: Gauge
    gateways_online: Gauge
    mqtt_connected: Gauge
    db_errors: Counter
    registry_generation: Gauge
    alert_readings: Counter
    alert_events: Counter
    alert_errors: Counter
    alert_backlog: Gauge
    pack_refusals: Gauge
    alert_via_database: Gauge


def create_metrics() -> IngestMetrics:
    """A fresh set of metrics on a new registry."""
    r = CollectorRegistry(auto_describe=True)
    return IngestMetrics(
        registry=r,
        messages_received=Counter("tungku_messages_received", "MQTT messages received", registry=r),
        messages_acked=Counter(
            "tungku_messages_acked", "MQTT messages acknowledged after commit", registry=r
        ),
        readings_accepted=Counter(
            "tungku_readings_accepted", "Readings that passed validation", registry=r
        ),
        readings_inserted=Counter(
            "tungku_readings_inserted", "New rows in readings (duplicates excluded)", registry=r
        ),
        readings_duplicate=Counter(
            "tungku_readings_duplicate",
            "Accepted readings whose (sensor, ts) was already stored (first value kept)",
            registry=r,
        ),
        readings_rejected=Counter(
            "tungku_readings_rejected",
            "Single readings rejected, by reason",
            ["reason"],
            registry=r,
        ),
        messages_rejected=Counter(
            "tungku_messages_rejected",
            "Whole messages rejected, by reason",
            ["reason"],
            registry=r,
        ),
        batches_committed=Counter("tungku_batches_committed", "Batches committed", registry=r),
        batch_rows=Histogram(
            "tungku_batch_rows",
            "Readings per committed batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000),
            registry=r,
        ),
        commit_seconds=Histogram(
            "tungku_commit_seconds",
            "Time to commit one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        ),
        ingest_lag_seconds=Histogram(
            "tungku_ingest_lag_seconds",
            "From receipt of a batch's first message to its commit",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        ),
        event_lag_seconds=Gauge(
            "tungku_event_lag_seconds",
            "Now minus the newest reading timestamp committed",
            registry=r,
        ),
        unacked_messages=Gauge(
            "tungku_unacked_messages", "Messages received and not yet acknowledged", registry=r
        ),
        inbox_messages=Gauge(
            "tungku_inbox_messages", "Received messages waiting to be decoded", registry=r
        ),
        inbox_stalls=Gauge(
            "tungku_inbox_stalls",
            "Times the inbox was full and the MQTT thread stopped reading (back-pressure)",
            registry=r,
        ),
        gateways_online=Gauge(
            "tungku_gateways_online", "Gateways whose last status is online", registry=r
        ),
        mqtt_connected=Gauge(
            "tungku_mqtt_connected", "1 while connected to the broker", registry=r
        ),
        db_errors=Counter("tungku_db_errors", "Failed database operations (retried)", registry=r),
        registry_generation=Gauge(
            "tungku_registry_generation", "Sensor registry generation in use", registry=r
        ),
        alert_readings=Counter(
            "tungku_alert_readings", "Committed readings evaluated by the rule engine", registry=r
        ),
        alert_events=Counter(
            "tungku_alert_events", "Condition events (activate, clear, suppress...)", registry=r
        ),
        alert_errors=Counter(
            "tungku_alert_errors",
            "Batches the rule engine failed on (readings stored; alerts may be missed)",
            registry=r,
        ),
        alert_backlog=Gauge(
            "tungku_alert_backlog", "Committed batches waiting for the rule engine", registry=r
        ),
        alert_via_database=Gauge(
            "tungku_alert_batches_via_database",
            "Committed batches the alert worker read back from the database because it was "
            "behind (ingest never waits for alerting)",
            registry=r,
        ),
        pack_refusals=Gauge(
            "tungku_rule_pack_refusals",
            "Rule pack files refused since start (the running pack stayed in force)",
            registry=r,
        ),
    )


def parse_metrics(text: str) -> dict[str, float]:
    """Flatten an exposition into {'name{label=value}': value}, summing nothing."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out
