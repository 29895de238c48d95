"""Log output of the p2pfl processes (``p2pfl peer``, ``p2pfl-bootstrap``): text or JSON lines, on stderr or
in a size-rotated file, with the process's peer id on every line and named events with stable fields.

The library itself configures no handler (an embedding application decides where lines go); the CLIs call
:func:`setup_logging`. An *event* is an ordinary log call with ``extra=event(name, **fields)``: the text
format shows the message as before, the JSON format adds ``"event": name`` and each field as a key of its
own, so an operator's query does not parse messages. ``docs/operations.md`` lists the events and fields.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

LOG_FORMATS: Final = ("text", "json")
#: a log file is rotated when it would grow past this (``--log-max-bytes``) ...
DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
#: ... keeping this many older files (``PATH.1`` newest ... ``PATH.5`` oldest; ``--log-backups``)
DEFAULT_BACKUPS: Final = 5
#: the peer id shown before the process knows its identity (only the first line or two of a start)
NO_PEER: Final = "-"
#: the keys every JSON line has; an event's fields never overwrite them
BASE_KEYS: Final = ("ts", "level", "logger", "peer_id", "msg")

#: the events p2pfl logs and the fields each carries (stable: dashboards and alerts query them)
EVENTS: Final[dict[str, tuple[str, ...]]] = {
    "start": ("listen",),
    "stop": ("outcome", "round", "seq", "persisted_seq", "error"),
    "round": (
        "round",
        "seq",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "neighbours",
        "mixed",
        "evicted",
        "rolled_back",
        "mix_refused",
        "duration_s",
    ),
    "rejection": ("peer", "counts"),
    "eviction": ("peer", "reason"),
    "readmission": ("peer", "evictions"),
    # the model rollout (docs/rollout.md): ``version`` is the version the event is about; deltas are the
    # candidate's (or the serving version's) ΔAUC/ΔF1 that decided it, null when not measured
    "canary": ("version", "serving_version", "canary_fraction", "reason", "delta_auc", "delta_f1"),
    "promotion": ("version", "from_version", "reason", "delta_auc", "delta_f1"),
    "demotion": ("version", "phase", "serving_version", "reason", "delta_auc", "delta_f1"),
    "rollback": ("version", "from_version", "reason", "delta_auc", "delta_f1"),
}


def event(name: str, *, peer_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """The ``extra=`` of a log call that records event ``name`` with ``fields`` (see :data:`EVENTS`)::

    log.warning("evicting peer=%s reason=%s", p, r, extra=event("eviction", peer=p, reason=r))

    ``peer_id``: the peer the line is about (its ``peer_id`` key), for processes that run several peers (a
    simulation, an application embedding two); default: the process's own (:class:`PeerIdFilter`)."""
    extra: dict[str, Any] = {"event": name, "event_fields": fields}
    if peer_id is not None:
        extra["event_peer_id"] = peer_id
    return extra


class PeerIdFilter(logging.Filter):
    """Stamps ``record.peer_id`` on every record a handler emits: the event's own ``peer_id`` when it names
    one (:func:`event`), else this process's (set :attr:`peer_id` once it is known)."""

    def __init__(self, peer_id: str = NO_PEER) -> None:
        super().__init__()
        self.peer_id = peer_id

    def filter(self, record: logging.LogRecord) -> bool:
        own = getattr(record, "event_peer_id", None)
        record.peer_id = own if isinstance(own, str) and own else self.peer_id
        return True


def _plain(value: Any) -> Any:
    """A JSON value for ``value``: non-finite floats become null (strict JSON has no NaN), containers are
    converted element by element, anything else unknown becomes its ``str``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601 with ms), ``level``, ``logger``, ``peer_id``, ``msg``,
    plus ``event`` and its fields for an event, and ``exc`` for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "peer_id": getattr(record, "peer_id", None) or getattr(record, "event_peer_id", None) or NO_PEER,
            "msg": record.getMessage(),
        }
        name = getattr(record, "event", None)
        if isinstance(name, str):
            out["event"] = name
            fields = getattr(record, "event_fields", None)
            for key, value in (fields if isinstance(fields, dict) else {}).items():
                if key not in BASE_KEYS and key != "event":
                    out[key] = _plain(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, allow_nan=False)


TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s [%(peer_id)s] %(message)s"


@dataclass(frozen=True)
class LogOptions:
    """Where and how a process logs (the ``--log-*`` flags)."""

    level: str = "info"
    format: str = "text"
    file: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--log-format``/``--log-file``/``--log-max-bytes``/``--log-backups`` flags of both CLIs."""
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text lines or one JSON object per line"
    )
    parser.add_argument(
        "--log-file", metavar="PATH", help="log to PATH, rotated by size (default: stderr)", default=None
    )
    parser.add_argument(
        "--log-max-bytes",
        type=_at_least(1024),
        default=DEFAULT_MAX_BYTES,
        help="rotate --log-file when it would grow past this many bytes",
    )
    parser.add_argument(
        "--log-backups",
        type=_at_least(1),
        default=DEFAULT_BACKUPS,
        help="rotated files kept (PATH.1 newest ... PATH.N oldest)",
    )


def _at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
        return value

    return parse


def options_from_args(args: argparse.Namespace, level: str) -> LogOptions:
    return LogOptions(
        level=level,
        format=args.log_format,
        file=Path(args.log_file) if args.log_file else None,
        max_bytes=args.log_max_bytes,
        backups=args.log_backups,
    )


def setup_logging(options: LogOptions) -> PeerIdFilter:
    """Send the root logger's records to stderr or a rotated file in the chosen format (replacing handlers a
    previous call installed); returns the filter whose ``peer_id`` the caller sets once it is known.

    A log file that cannot be opened raises ``OSError`` (the CLIs' exit code 3) before the process starts."""
    handler: logging.Handler
    if options.file is not None:
        handler = logging.handlers.RotatingFileHandler(
            options.file, maxBytes=options.max_bytes, backupCount=options.backups, encoding="utf-8"
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    peer_filter = PeerIdFilter()
    handler.addFilter(peer_filter)
    handler.setFormatter(JsonFormatter() if options.format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, options.level.upper()))
    return peer_filter


def round_event(report: Any, peer_id: str | None = None) -> dict[str, Any]:
    """The ``extra=`` of the ``round`` event for a ``RoundReport`` (``evicted``: how many this round)."""
    fields = {name: getattr(report, name, None) for name in EVENTS["round"]}
    fields["evicted"] = len(getattr(report, "evicted", ()) or ())
    return event("round", peer_id=peer_id, **fields)
