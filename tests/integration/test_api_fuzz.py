"""Schemathesis against the real app on the real database: generated requests from the app's
own OpenAPI schema (examples, coverage, fuzzing and stateful phases) must never get a server
error, and every response must be one the schema documents: its status, content type and
body."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from tests.fix_api import Api

SITE = "morowali-a"


def fuzz(api: Api, token: str, report: Path, *select: str) -> str:
    """Run schemathesis on the operations `select` names (regex options); its output tail."""
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe is not None, "schemathesis is not installed in the environment"
    run = subprocess.run(
        [
            exe,
            "run",
            f"{api.url}/api/v1/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            *select,
            "--max-examples",
            "5",
            "--seed",
            "1",
            "--request-timeout",
            "60",
            "--report",
            "junit",
            "--report-dir",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    tail = run.stdout[-6000:]
    assert run.returncode == 0, tail
    assert "Authentication failed" not in tail, tail
    return tail


def test_generated_requests_never_get_a_server_error(api: Api, tmp_path: Path) -> None:
    """Every operation with a token whose role may use it: an admin's for all but the
    operator's alert actions and the inspector's annotations, which get their own runs. Logout
    and user changes are left out: they would end the token the run uses; so is the live
    event stream, which never ends by itself (each would wait out the request timeout). They
    have tests of their own (test_api.py, test_live.py)."""
    admin = api.user("admin", "admin")
    r = admin.post(
        "/api/v1/facilities", json={"site_id": SITE, "name": "Smelter A", "company": "PT A"}
    )
    assert r.status_code == 201
    admin.post(
        f"/api/v1/facilities/{SITE}/licences",
        json={"kind": "IUI", "number": "1", "issued_on": "2020-01-01"},
    )
    op = api.user("op1", "operator", (SITE,))
    insp = api.user("insp1", "inspector", (SITE,))

    def token(c: httpx.Client) -> str:
        return str(c.headers["Authorization"]).removeprefix("Bearer ")

    fuzz(
        api,
        token(admin),
        tmp_path,
        "--exclude-path-regex",
        r"^/api/v1/(auth/logout|users/\{username\}|alerts/\{alert_id\}/\{action\}"
        r"|facilities/\{site\}/annotations|facilities/\{site\}/events)$",
    )
    fuzz(api, token(op), tmp_path, "--include-path-regex", r"^/api/v1/alerts/")
    fuzz(api, token(insp), tmp_path, "--include-path-regex", r"/annotations$")
    # The app is still up and the record history intact.
    assert httpx.get(f"{api.url}/api/v1/health").json()["status"] == "ok"
    verify = admin.get("/api/v1/journal/verify").json()
    assert verify["record_history"]["ok"], verify
