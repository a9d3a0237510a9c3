"""The `tungku` command line, run as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fix_ingest import scalar


def tungku(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_every_subcommand() -> None:
    """`tungku --help` names each subcommand, and each has its own help."""
    out = tungku("--help")
    assert out.returncode == 0
    for cmd in (
        "db", "registry", "ingest", "monitor", "rejects", "simulate", "fleet", "rules",
        "alert", "journal", "permit", "facility", "replay",
    ):  # fmt: skip
        assert cmd in out.stdout
    for sub in (
        ["db", "migrate"],
        ["registry", "load"],
        ["ingest", "run"],
        ["monitor"],
        ["rejects"],
        ["simulate"],
        ["fleet", "export"],
        ["rules", "check"],
        ["alert", "shelve"],
        ["journal", "verify"],
        ["permit", "open"],
        ["facility", "report"],
        ["replay"],
    ):
        h = tungku(*sub, "--help")
        assert h.returncode == 0, h.stderr
        assert "usage: tungku" in h.stdout
        assert len(h.stdout) > 200


def test_migrate_creates_then_reports_up_to_date(database_url: str) -> None:
    """`tungku db migrate` applies the schema once; a second run changes nothing."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    env = {"TUNGKU_DATABASE_URL": database_url, "TUNGKU_DB_SCHEMA": schema}
    try:
        first = tungku("db", "migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert "applied 0001_initial" in first.stdout
        second = tungku("db", "migrate", env=env)
        assert second.returncode == 0, second.stderr
        assert "up to date" in second.stdout
        assert "applied" not in second.stdout.replace("applied)", "")
        with psycopg.connect(database_url, autocommit=True) as conn:
            hyper = scalar(
                conn,
                "SELECT count(*) FROM timescaledb_information.hypertables"
                " WHERE hypertable_schema = %s AND hypertable_name = 'readings'",
                schema,
            )
            assert hyper == 1
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_registry_load_stores_sites_and_retires_removed_sensors(
    tmp_path: Path, database_url: str, db_schema: str, db: psycopg.Connection[Any]
) -> None:
    """Loading a site file stores its sensors; loading it again without one retires that one."""
    env = {"TUNGKU_DATABASE_URL": database_url, "TUNGKU_DB_SCHEMA": db_schema}
    out = tungku("fleet", "export", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    site_a = tmp_path / "morowali-a.toml"
    loaded = tungku("registry", "load", str(site_a), env=env)
    assert loaded.returncode == 0, loaded.stderr
    n = scalar(db, "SELECT count(*) FROM sensors WHERE retired_at IS NULL")
    assert f"{n} sensors" in loaded.stdout
    text = site_a.read_text()
    last = text.rindex("[[gateways.sensors]]")
    site_a.write_text(text[:last])
    again = tungku("registry", "load", str(site_a), env=env)
    assert again.returncode == 0, again.stderr
    assert "(1 retired)" in again.stdout
    assert scalar(db, "SELECT count(*) FROM sensors WHERE retired_at IS NULL") == n - 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[site]\nid = 'Bad Id'\n[[gateways]]\nid = 'g'\n", "[site].id 'Bad Id'"),
        ("[site\n", "not valid TOML"),
    ],
)
def test_bad_site_file_is_refused_with_its_location(
    tmp_path: Path, content: str, message: str, database_url: str, db_schema: str
) -> None:
    """A broken site file is refused, exit code 2, naming the file and the problem."""
    bad = tmp_path / "bad.toml"
    bad.write_text(content)
    out = tungku(
        "registry",
        "load",
        str(bad),
        env={"TUNGKU_DATABASE_URL": database_url, "TUNGKU_DB_SCHEMA": db_schema},
    )
    assert out.returncode == 2
    assert str(bad) in out.stderr
    assert message in out.stderr


@pytest.mark.parametrize(
    ("env", "config", "message"),
    [
        ({"TUNGKU_MAX_BATCH_ROWS": "many"}, None, "TUNGKU_MAX_BATCH_ROWS"),
        ({}, "[ingest]\nbatch = 1\n", "unknown setting [ingest].batch"),
        ({}, "missing", "cannot read config file"),
    ],
)
def test_broken_configuration_is_refused_clearly(
    tmp_path: Path, env: dict[str, str], config: str | None, message: str
) -> None:
    """A broken setting or config file stops the command with a message naming it."""
    args = []
    if config == "missing":
        args = ["--config", str(tmp_path / "nope.toml")]
    elif config is not None:
        (tmp_path / "c.toml").write_text(config)
        args = ["--config", str(tmp_path / "c.toml")]
    out = tungku(*args, "ingest", "run", env=env)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_unreachable_database_is_a_clear_error() -> None:
    """`tungku db migrate` against a database that is not there names the URL, no traceback."""
    out = tungku(
        "db", "migrate", env={"TUNGKU_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    )
    assert out.returncode == 2
    assert "cannot connect to postgresql://postgres@127.0.0.1:1/none" in out.stderr
    assert "Traceback" not in out.stderr
