"""Log configuration of a Tungku process: structured lines (JSON or console) on stderr.

Owns the one call to `structlog.configure`; the CLI calls it at start, and so does a child
process (the alert worker) that the service spawns.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(log_format: str, log_level: str) -> None:
    """Structured logs on stderr: `json` (one object per line) or `console`."""
    level = getattr(logging, log_level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
