"""Settings of the ingest service: read once, validated, passed down.

Pure apart from the mapping it is given: `load_settings` takes the environment and the text of
an optional TOML file as arguments, so no module reads `os.environ` on its own. Precedence:
defaults < TOML file (table `[ingest]`) < environment (`TUNGKU_<NAME>`, upper case).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ingest.contract import DEFAULT_MAX_PAYLOAD_BYTES


class SettingsError(ValueError):
    """Raised when a setting is missing, of the wrong type or out of range; names the setting."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the ingest service, with its default."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/tungku"
    db_schema: str = "tungku"
    mqtt_host: str = "127.0.0.1"
    #: The project's broker (deploy/broker.sh) listens on 1884, beside a system one on 1883.
    mqtt_port: int = 1884
    mqtt_client_id: str = "tungku-ingest"
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_keepalive_s: int = 30
    #: How long the broker keeps our subscription and queued messages while we are away.
    mqtt_session_expiry_s: int = 7 * 24 * 3600
    #: MQTT v5 Receive Maximum: unacknowledged QoS 1 messages the broker may send us. This is
    #: the back-pressure window, and with max_payload_bytes it bounds the service's memory.
    mqtt_receive_maximum: int = 1000
    #: Only these sites are subscribed to; empty means every site (`+`).
    sites: tuple[str, ...] = ()
    max_batch_rows: int = 10000
    #: Batches committed concurrently, each on its own connection. PostgreSQL spends most of
    #: an idempotent insert in the unique index; two backends use both cores of a small box.
    #: Acknowledgements still go out in arrival order.
    writers: int = 2
    #: 20 ms: measured p50/p99 publish -> commit at 20k readings/s of 41/62 ms (50 ms: 75/109).
    max_batch_delay_ms: int = 20
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_future_skew_s: float = 300.0
    #: Readings older than this are refused as stale_timestamp (a reset gateway clock); store
    #: and forward backfills within it are accepted. 0: anything since 2000-01-01.
    max_age_days: float = 400.0
    #: Chunks of readings older than this are dropped by the service; 0 keeps everything.
    retention_days: float = 0.0
    retention_check_interval_s: float = 3600.0
    registry_refresh_s: float = 2.0
    #: Prometheus metrics endpoint on 127.0.0.1; 0 disables it.
    metrics_port: int = 9108
    metrics_host: str = "127.0.0.1"
    #: Also write the metrics in Prometheus text format to this file (node-exporter textfile).
    metrics_file: str = ""
    log_format: str = "json"
    log_level: str = "info"
    #: Evaluate the rule pack on committed readings (alerting); off: ingest only.
    alerting: bool = True
    #: Run the rule engine in a child process of its own (its own interpreter lock and core);
    #: off: in the ingest process (measured slower: see bench/results/alerts.json).
    alert_worker: bool = True
    #: The worker evaluates what was committed within this long in one call: its cost is
    #: mostly per sensor per call (measured: 400 readings a call 6 ms, 100k a call 115 ms).
    alert_batch_delay_ms: int = 50
    #: Rule pack file; empty: the smelter pack shipped with Tungku.
    rule_pack: str = ""
    #: Longest an operator may shelve an alert.
    max_shelve_s: float = 86_400.0
    #: Webhook endpoints (name, url, secret), from `[[webhooks]]` tables of the TOML file only:
    #: secrets do not belong in the environment of every process.
    webhooks: tuple[tuple[str, str, str], ...] = ()
    #: `tungku api` listens here.
    api_host: str = "127.0.0.1"
    api_port: int = 8600
    #: A login token's lifetime. 8 h: one control-room shift [A].
    api_token_ttl_s: float = 8 * 3600.0
    #: A critical (high or urgent) alert unacknowledged longer than this makes the facility's
    #: compliance status say so. 15 min [A]: ISA-18.2 asks for a defined response time per
    #: priority, not for this number.
    critical_ack_sla_s: float = 900.0

    def validate(self) -> Settings:
        """Return self, or raise SettingsError naming the first bad setting."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.db_schema):
            raise SettingsError(f"db_schema {self.db_schema!r} must be a lower-case SQL identifier")
        positive = (
            "writers",
            "mqtt_port",
            "mqtt_keepalive_s",
            "mqtt_receive_maximum",
            "max_batch_rows",
            "max_batch_delay_ms",
            "alert_batch_delay_ms",
            "max_payload_bytes",
            "registry_refresh_s",
            "retention_check_interval_s",
            "api_port",
            "api_token_ttl_s",
            "critical_ack_sla_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive, not {getattr(self, name)!r}")
        if self.mqtt_receive_maximum > 65535:
            raise SettingsError("mqtt_receive_maximum must be at most 65535 (MQTT v5 limit)")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingsError(f"{f.name} must be a finite number, not {value!r}")
        if self.mqtt_session_expiry_s <= 0:
            raise SettingsError(
                "mqtt_session_expiry_s must be positive: with 0 the broker forgets the session, "
                "and the messages queued for it, whenever the service disconnects"
            )
        for name in ("max_future_skew_s", "retention_days", "metrics_port", "max_age_days"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must not be negative, not {getattr(self, name)!r}")
        if self.log_format not in ("json", "console"):
            raise SettingsError(f"log_format must be json or console, not {self.log_format!r}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise SettingsError(
                f"log_level must be debug|info|warning|error, not {self.log_level!r}"
            )
        for site in self.sites:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", site):
                raise SettingsError(f"sites: {site!r} is not a valid site id")
        return self


def _coerce(name: str, kind: Any, raw: Any, origin: str) -> Any:
    try:
        if kind is bool or kind == "bool":
            if isinstance(raw, bool):
                return raw
            return {"1": True, "true": True, "0": False, "false": False}[str(raw).lower()]
        if kind in (int, "int"):
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(raw)
        if kind in (float, "float"):
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if kind in (str, "str"):
            if not isinstance(raw, str):
                raise ValueError(raw)
            return raw
        if kind in (tuple[str, ...], "tuple[str, ...]"):
            if isinstance(raw, str):
                return tuple(s.strip() for s in raw.split(",") if s.strip())
            if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
                return tuple(raw)
            raise ValueError(raw)
    except (ValueError, KeyError, TypeError):
        raise SettingsError(f"{origin}: {name} = {raw!r} is not a valid {kind}") from None
    raise SettingsError(f"{origin}: {name} has an unsupported type {kind}")


def load_settings(
    environ: Mapping[str, str], toml_text: str | None = None, toml_source: str = "<config>"
) -> Settings:
    """Build Settings from defaults, an optional TOML text and environment variables."""
    known = {f.name: f.type for f in fields(Settings)}
    values: dict[str, Any] = {}
    if toml_text is not None:
        try:
            doc = tomllib.loads(toml_text)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{toml_source}: not valid TOML: {exc}") from None
        section = doc.get("ingest", {})
        if not isinstance(section, dict):
            raise SettingsError(f"{toml_source}: [ingest] must be a table")
        for key, raw in section.items():
            if key not in known:
                raise SettingsError(f"{toml_source}: unknown setting [ingest].{key}")
            values[key] = _coerce(key, known[key], raw, toml_source)
        hooks = doc.get("webhooks", [])
        if not isinstance(hooks, list) or not all(isinstance(h, dict) for h in hooks):
            raise SettingsError(f"{toml_source}: webhooks must be [[webhooks]] tables")
        parsed = []
        for i, h in enumerate(hooks):
            if set(h) != {"name", "url", "secret"} or not all(
                isinstance(v, str) for v in h.values()
            ):
                raise SettingsError(
                    f"{toml_source}: webhooks[{i}] needs exactly name, url and secret strings"
                )
            parsed.append((h["name"], h["url"], h["secret"]))
        values["webhooks"] = tuple(parsed)
    for name, kind in known.items():
        if name == "webhooks":
            continue
        env_name = f"TUNGKU_{name.upper()}"
        if env_name in environ:
            values[name] = _coerce(name, kind, environ[env_name], f"environment {env_name}")
    return dataclasses.replace(Settings(), **values).validate()
