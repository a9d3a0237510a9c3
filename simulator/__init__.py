"""Simulator: a fleet of smelter site gateways publishing plausible sensor readings over MQTT.

Owns: the sensor catalogue (`catalogue`: units, physical ranges, baselines, noise and sampling
periods from DOMAIN.md §2, each with its source tag), fleet files (`fleet`: sites -> gateways,
expanded to registry sensors), the plant model (`plant`: deterministic, vectorised readings per
integer tick), the DOMAIN.md §6 incident scenarios layered over it with their expected alerts
and a checker (`scenario`), the per-gateway store-and-forward disk buffer (`spool`), the MQTT
publisher (`publisher`) and the `tungku simulate` subcommand (`command`).

Pure modules (`catalogue`, `fleet` apart from reading its file, `plant`, `scenario`) read no
clock, use no global random and do no network I/O. Only `spool` (SQLite), `publisher` (MQTT,
clock) and `command` (argument parsing, stderr) touch the outside world. The wire format is not
defined here: topics and payloads come from `ingest.contract`, sensors from `ingest.registry`.
"""
