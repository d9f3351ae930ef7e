"""Structured events over stdlib logging, rendered by structlog.

The library logs to the ``dify_lc.events`` stdlib logger and never configures logging itself:
with no configuration, INFO events are dropped after one ``isEnabledFor`` check. Call
:func:`configure_logging` (or attach your own handler) to see them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from dify_lc.observability.redaction import RedactingFormatter, mask_secret_fields

__all__ = ["EVENTS_LOGGER", "configure_logging", "emit", "enabled"]

EVENTS_LOGGER = logging.getLogger("dify_lc.events")


def enabled() -> bool:
    """Would an event be written? (Checked before building one: logging off costs nothing.)"""
    return EVENTS_LOGGER.isEnabledFor(logging.INFO)


def emit(event: str, fields: dict[str, Any], level: int = logging.INFO) -> None:
    """Write one event (``llm.attempt``, ``llm.call``, ``breaker.state``) with its fields."""
    logger = EVENTS_LOGGER
    if logger.isEnabledFor(level):
        # makeRecord + handle instead of .info(): skips the caller lookup (a stack walk), which
        # was a fifth of an event's cost and means nothing here (the caller is always this).
        record = logger.makeRecord(
            logger.name, level, __file__, 0, event, (), None, extra={"dify_lc": fields}
        )
        logger.handle(record)


def _add_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    if record is not None:
        event_dict["level"] = record.levelname.lower()
        event_dict["logger"] = record.name
        fields = getattr(record, "dify_lc", None)
        if fields:
            event_dict.update(fields)
    return event_dict


def configure_logging(
    *, json: bool = True, level: int | str = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Show dify-lc's events: JSON lines for machines (``json=True``) or a console for people.

    Installs one handler on the ``dify_lc`` logger (replacing one installed by an earlier
    call) whose output is redacted as a whole. Returns the handler.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            _add_fields,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_secret_fields,  # values are redacted in the final text (RedactingFormatter)
            renderer,
        ],
        foreign_pre_chain=[],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(formatter))
    handler.set_name("dify_lc")
    root = logging.getLogger("dify_lc")
    for old in list(root.handlers):
        if old.get_name() == "dify_lc":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return handler
