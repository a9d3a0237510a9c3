"""Ingest: the wire contract, decoding and validation of gateway messages, the sensor registry,
batching, and storage of readings and rejects in TimescaleDB.

Owns: topics and payloads of wire contract v1 (`contract`), the registry (`registry`), batching
decisions (`batch`), the PostgreSQL adapter (`store`), schema migrations (`migrate`), the MQTT
service loop (`service`) and the `tungku` command line (`cli`, the one place things are wired).
Pure modules (`contract`, `registry`, `batch`, `settings`) do no I/O and read no clock.
"""
