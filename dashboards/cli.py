"""`tungku api` (serve the API) and `tungku user` (create users, the first admin included)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import psycopg

from dashboards import auth
from ingest.migrate import session_sql
from ingest.settings import Settings


class UserCommandError(RuntimeError):
    """A user command that cannot do what was asked; the message says why."""


def add_arguments(sub: Any, common: Any) -> None:
    """Register `api` and `user` on the tungku parser."""
    api = sub.add_parser(
        "api",
        help="serve the HTTP API (until SIGINT/SIGTERM)",
        description="Serve the Tungku API on http://<api_host>:<api_port>/api/v1 (settings "
        "api_host, api_port; --host/--port override them). OpenAPI: /api/v1/openapi.json, "
        "interactive docs: /api/v1/docs. The schema must be migrated (`tungku db migrate`).",
    )
    common(api)
    api.add_argument("--host", default=None, help="listen address (default: api_host)")
    api.add_argument("--port", type=int, default=None, help="listen port (default: api_port)")
    api.set_defaults(console=cmd_api)

    user = sub.add_parser("user", help="API users", description="API users and their roles.")
    usub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    cr = usub.add_parser(
        "create",
        help="create a user (e.g. the first admin)",
        description="Create an API user with a role (operator, inspector, admin) and the "
        "facilities it may see. The password is read from standard input when it is not a "
        "terminal (one line), else asked for twice. Recorded in the record history with the "
        "actor 'cli:<login name>'.",
    )
    common(cr)
    cr.add_argument("username")
    cr.add_argument("--role", required=True, choices=[r.value for r in auth.Role])
    cr.add_argument("--site", action="append", default=[], help="a facility it may see")
    cr.set_defaults(console=cmd_user_create)


def cmd_api(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Serve the API with uvicorn."""
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    from dashboards.app import create_app  # noqa: PLC0415

    host = args.host or s.api_host
    port = args.port or s.api_port
    out.write(f"tungku api: http://{host}:{port}/api/v1/docs\n")
    out.flush()
    uvicorn.run(create_app(s), host=host, port=port, log_level=s.log_level, access_log=False)
    return 0


def _password(stdin: TextIO) -> str:
    if not stdin.isatty():
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UserCommandError("the two passwords differ")
    return first


def cmd_user_create(args: argparse.Namespace, s: Settings, out: TextIO) -> int:
    """Create a user."""
    password = _password(sys.stdin)

    async def main() -> int:
        try:
            conn = await psycopg.AsyncConnection.connect(
                s.database_url, autocommit=True, connect_timeout=10
            )
        except psycopg.OperationalError as exc:
            raise UserCommandError(f"cannot connect to {s.database_url}: {exc}") from None
        try:
            await conn.execute(session_sql(s.db_schema))
            uid = await auth.create_user(
                conn,
                username=args.username,
                role=auth.Role(args.role),
                password=password,
                sites=args.site,
                actor=f"cli:{getpass.getuser()}",
                now=datetime.now(UTC),
            )
        except auth.AuthError as exc:
            raise UserCommandError(str(exc)) from None
        except psycopg.errors.UndefinedTable:
            raise UserCommandError("the schema is not migrated: run `tungku db migrate`") from None
        finally:
            await conn.close()
        sites = ", ".join(sorted(set(args.site))) or (
            "every facility" if args.role == "admin" else "none yet"
        )
        out.write(f"user {args.username} ({args.role}) created, id {uid}; facilities: {sites}\n")
        return 0

    return asyncio.run(main())
