"""Users, roles, passwords and tokens of the API.

Roles (the issue's access model):
- operator: reads alerts and live data of its facilities; acknowledges, shelves, resets and
  comments on alerts;
- inspector: reads everything of its facilities, the journal and exports included; changes
  nothing but its own timeline annotations;
- admin: users, facilities and their records, rule packs; sees every facility.

Passwords are stored as Argon2id hashes (argon2-cffi, RFC 9106 parameters). A login gives an
opaque bearer token of 256 random bits; the database keeps only its sha256 and its expiry, so
a stolen table gives no usable token, and a token can be revoked before it expires.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg.rows import tuple_row

from dashboards import history

_HASHER: Final = PasswordHasher()
#: Verified when the user does not exist, so a login's time does not tell whether it does.
_DUMMY_HASH: Final = _HASHER.hash("tungku-no-such-user")
USERNAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
MIN_PASSWORD: Final = 10


class Role(StrEnum):
    """What a user may do."""

    OPERATOR = "operator"
    INSPECTOR = "inspector"
    ADMIN = "admin"


class AuthError(ValueError):
    """A user or password that cannot be accepted; the message names the problem."""


class AuthConflictError(AuthError):
    """The user exists already."""


#: Argon2 is meant to be slow (tens of ms, 64 MiB): hashes run in worker threads, at most two
#: at once on this 2-core class of machine, so logins never stall the event loop.
_HASHING: Final = threading.BoundedSemaphore(2)


def _hash_sync(password: str) -> str:
    with _HASHING:
        return _HASHER.hash(password)


def _verify_sync(stored: str, password: str) -> bool:
    with _HASHING:
        try:
            return bool(_HASHER.verify(stored, password))
        except (VerificationError, InvalidHashError):
            return False


@dataclass(frozen=True, slots=True)
class User:
    """An authenticated user."""

    id: int
    username: str
    role: Role
    sites: frozenset[str]

    def sees(self, site: str) -> bool:
        """True when the user may see this facility."""
        return self.role is Role.ADMIN or site in self.sites


class LoginThrottle:
    """Failed logins per key (a username, a client address) in a sliding window: once a key
    has `max_failures` in `window_s`, further attempts are refused until the oldest ages out.
    Kept in the API process (one process serves the API; a restart forgets it)."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self._max = max_failures
        self._window = window_s
        self._failures: dict[str, collections.deque[float]] = {}

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until `key` may try again (0: now)."""
        q = self._failures.get(key)
        if not q:
            return 0.0
        while q and q[0] <= now - self._window:
            q.popleft()
        if not q:
            del self._failures[key]
            return 0.0
        return q[0] + self._window - now if len(q) >= self._max else 0.0

    def failed(self, key: str, now: float) -> None:
        """Count a failed attempt."""
        self._failures.setdefault(key, collections.deque()).append(now)
        if len(self._failures) > 100_000:  # bound memory under a spray of names
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, key: str) -> None:
        """Forget a key's failures."""
        self._failures.pop(key, None)


def check_password(password: str) -> None:
    """Raise AuthError when a new password is too weak to store."""
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise AuthError("a password may have at most 1024 characters")


async def hash_password(password: str) -> str:
    """The Argon2id hash of a password (checked first), computed in a worker thread."""
    check_password(password)
    return await asyncio.to_thread(_hash_sync, password)


def token_digest(token: str) -> bytes:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).digest()


async def create_user(
    conn: psycopg.AsyncConnection[Any],
    *,
    username: str,
    role: Role,
    password: str,
    sites: list[str],
    actor: str,
    now: datetime,
) -> int:
    """Create a user and journal it in the record history; returns the id.

    Raises AuthError on a bad username or password, or one that is taken."""
    if not USERNAME_RE.fullmatch(username):
        raise AuthError(
            f"username {username!r}: 2-63 characters, lower-case letters, digits, '.', '_', '-'"
        )
    pw_hash = await hash_password(password)
    async with conn.transaction():
        cur = conn.cursor(row_factory=tuple_row)
        await cur.execute("SELECT 1 FROM users WHERE username = %s", (username,))
        if await cur.fetchone():
            raise AuthConflictError(f"user {username!r} exists already")
        await cur.execute(
            "INSERT INTO users (username, role, password_hash, created_at)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (username, role.value, pw_hash, now),
        )
        row = await cur.fetchone()
        assert row is not None  # noqa: S101 - RETURNING gives a row
        uid = int(row[0])
        for s in sorted(set(sites)):
            await cur.execute("INSERT INTO user_sites VALUES (%s, %s)", (uid, s))
        await history.append(
            conn,
            at=now,
            actor=actor,
            site_id="",
            entity="user",
            entity_id=username,
            action="create",
            before=None,
            after={"username": username, "role": role.value, "sites": sorted(set(sites))},
        )
    return uid


async def login(
    conn: psycopg.AsyncConnection[Any], username: str, password: str, *, now: datetime, ttl_s: float
) -> tuple[str, datetime] | None:
    """A new token and its expiry, or None when the username or password is wrong or the user
    is disabled (one answer for all three: a login does not tell which)."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(
        "SELECT id, password_hash, disabled FROM users WHERE username = %s", (username,)
    )
    row = await cur.fetchone()
    stored = row[1] if row else _DUMMY_HASH
    if not await asyncio.to_thread(_verify_sync, stored, password):
        return None
    if row is None or row[2]:
        return None
    if _HASHER.check_needs_rehash(stored):
        await cur.execute(
            "UPDATE users SET password_hash = %s WHERE id = %s",
            (await asyncio.to_thread(_hash_sync, password), row[0]),
        )
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=ttl_s)
    await cur.execute(
        "INSERT INTO api_tokens (token_sha256, user_id, issued_at, expires_at)"
        " VALUES (%s, %s, %s, %s)",
        (token_digest(token), row[0], now, expires),
    )
    return token, expires


async def authenticate(
    conn: psycopg.AsyncConnection[Any], token: str, *, now: datetime
) -> User | None:
    """The user a token belongs to, or None when it is unknown, expired, revoked or its user
    is disabled."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(
        "SELECT u.id, u.username, u.role,"
        " ARRAY(SELECT site_id FROM user_sites WHERE user_id = u.id) FROM api_tokens t"
        " JOIN users u ON u.id = t.user_id WHERE t.token_sha256 = %s AND t.expires_at > %s"
        " AND t.revoked_at IS NULL AND NOT u.disabled",
        (token_digest(token), now),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return User(int(row[0]), row[1], Role(row[2]), frozenset(row[3]))


async def revoke(conn: psycopg.AsyncConnection[Any], token: str, *, now: datetime) -> None:
    """Revoke a token (logout)."""
    await conn.execute(
        "UPDATE api_tokens SET revoked_at = %s WHERE token_sha256 = %s AND revoked_at IS NULL",
        (now, token_digest(token)),
    )
