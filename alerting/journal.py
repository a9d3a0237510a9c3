"""The alert journal's hash chain: canonical entries, their hashes, and verification.

Owns what an entry's hash covers and how a chain is checked. Each entry's hash is
sha256(previous entry's hash || canonical bytes of the entry), the first entry's previous
hash being empty; canonical bytes are the entry's fields as JSON with sorted keys, times in
integer microseconds. Changing, removing or reordering any entry breaks every hash after it,
so `verify` finds the first entry that was tampered with.

Pure: hashes what it is given; reading rows is the store's job.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

#: The fields an entry's hash covers, in the order the journal table holds them.
FIELDS: Final = (
    "seq",
    "at_us",
    "alert_id",
    "site_id",
    "asset",
    "rule_id",
    "subject",
    "actor",
    "action",
    "from_state",
    "to_state",
    "severity",
    "priority",
    "value",
    "limit",
    "reason",
    "pack_name",
    "pack_version",
    "detail",
)


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash covers: its FIELDS as sorted-key JSON."""
    doc = {}
    for f in FIELDS:
        v = entry.get(f)
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        doc[f] = v
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def entry_hash(prev_hash: bytes, entry: Mapping[str, Any]) -> bytes:
    """The hash of an entry that follows an entry whose hash is prev_hash."""
    return hashlib.sha256(prev_hash + canonical(entry)).digest()


@dataclass(frozen=True, slots=True)
class Verification:
    """What `verify` found: entries checked, the last hash, and the problems (empty = intact)."""

    entries: int
    last_hash: bytes
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when the chain is intact."""
        return not self.problems


def verify(
    rows: Iterable[Mapping[str, Any]],
    *,
    head: tuple[int, bytes] | None = None,
    hasher: Callable[[bytes, Mapping[str, Any]], bytes] = entry_hash,
    noun: str = "entry",
    chain: str = "chain",
) -> Verification:
    """Check a hash chain read in seq order; each row has the fields `hasher` covers, plus
    prev_hash and hash. The alert journal's by default; the record history (dashboards.history)
    passes its own hash, and names its entries "change".

    `head` is the (seq, hash) the database says the chain ends with: a chain cut short at the
    end (its last entries deleted) is found by comparing with it.
    """
    problems: list[str] = []
    prev = b""
    expected_seq = 1
    n = 0
    for row in rows:
        n += 1
        seq = int(row["seq"])
        if seq != expected_seq:
            problems.append(f"{noun} {seq}: expected {noun} {expected_seq} here (missing entries)")
        if bytes(row["prev_hash"]) != prev:
            problems.append(f"{noun} {seq}: does not link to the {noun} before it")
        if hasher(prev, row) != bytes(row["hash"]):
            problems.append(f"{noun} {seq}: content does not match its hash (altered)")
        prev = bytes(row["hash"])
        expected_seq = seq + 1
        if len(problems) >= 20:
            problems.append("... stopped after 20 problems")
            break
    if head is not None and not problems:
        head_seq, head_hash = head
        if head_seq != expected_seq - 1 or (head_seq and bytes(head_hash) != prev):
            problems.append(
                f"the {chain} ends at {noun} {expected_seq - 1} but its head says {head_seq}"
                " (entries removed from the end)"
            )
    return Verification(n, prev, tuple(problems))
