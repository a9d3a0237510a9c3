"""Alerting: rule packs, the rule engine, the streaming anomaly detector, the ISA-18.2 alarm
lifecycle, the journal, the facility record as alerting sees it, and delivery of transitions.

Pure modules (no I/O, no clock): `pack`, `engine`, `anomaly`, `exposure`, `lifecycle`,
`journal`, `compliance`, `replay`. Adapters: `store` (PostgreSQL), `webhook` (HTTP). Wiring:
`evaluator` (the engine on committed batches, checkpoints, pack changes), `worker` (the
evaluator in a child process of the ingest service), `command`, `console` and `scorer` (the
`tungku` subcommands).
"""
