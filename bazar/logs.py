"""Log output for log shippers (one JSON object per line) that never carries the cluster secret.

``twistd --logger bazar.logs.json_observer -n bazar-frontend ...`` writes every log event to
stdout as one line of JSON: Twisted's own structured form (``eventAsJSON``: ``log_format``,
``log_level``, ``log_namespace``, ``log_time``, the event's own fields and their flattened
string forms) plus ``log_message``, the rendered text with any traceback, so a shipper needs no
Twisted to show it. ``bazar.logs.text_observer`` is the same redaction for classic text logs.

Redaction happens before anything is rendered, because a secret can reach a log line in ways no
single field check sees: a field named like a secret, a header dict, an exception message, or
an object whose ``str``/``repr`` (a ``Config``) contains it. So:

* a field whose *name* looks secret (``secret``, ``password``, ``token``, ``authorization``,
  ``cookie``, in any case, at any depth) is replaced by ``[REDACTED]`` whatever its value;
* every *string* (field values, dict keys, the format string, each field's formatted form,
  the rendered message, the traceback) has each registered secret replaced by ``[REDACTED]``;
  the JSON output is checked once more after serialisation, string by string.

A process learns the secret through ``register_secret(config.secret)``, called once the
config is loaded. A secret that was never registered is caught only by the field-name rule.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    eventAsJSON,
    eventAsText,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

REDACTED = "[REDACTED]"

# Names of fields whose values are never logged, whatever they hold.
SECRET_KEY = re.compile(r"secret|passw(?:or)?d|token|authorization|cookie", re.IGNORECASE)

# Longest first, so a secret that contains another one is replaced whole. A tuple, replaced
# (never mutated) on registration, so an observer on another thread never sees it change.
_secrets: tuple[str, ...] = ()


def register_secret(value: str) -> None:
    """Make every later log line replace ``value`` by ``[REDACTED]``; empty values are ignored."""
    global _secrets
    if not isinstance(value, str):
        raise TypeError(f"a secret must be a str, not {type(value).__name__}")
    if value and value not in _secrets:
        _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def unregister_secret(value: str) -> None:
    """Forget a registered secret (after a rotation, or at the end of a test)."""
    global _secrets
    _secrets = tuple(s for s in _secrets if s != value)


def redact_text(text: str) -> str:
    """``text`` with every registered secret replaced by ``[REDACTED]``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any) -> Any:
    """A copy of ``value`` with secrets removed from every string and secret-named field in it.

    Dicts, lists and tuples are copied (a container that contains itself is cut off rather than
    followed forever); other objects are returned as they are: their text is redacted where it
    is rendered, in flattened fields, the message and the JSON output.
    """
    return _redact(value, set())


def _redact(value: Any, open_containers: set[int]) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("charmap"))  # as eventAsJSON itself renders bytes
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN and infinities are not JSON
    if not isinstance(value, Mapping | list | tuple):
        return value
    if id(value) in open_containers:
        return "<cycle>"
    open_containers.add(id(value))
    try:
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if isinstance(key, str) and SECRET_KEY.search(key):
                    out[redact_text(key)] = REDACTED
                else:
                    out[_redact(key, open_containers)] = _redact(item, open_containers)
            return out
        items = [_redact(item, open_containers) for item in value]
        return items if isinstance(value, list) else tuple(items)
    finally:
        open_containers.discard(id(value))


class RedactedTraceback(Exception):
    """Stands in for a failure whose traceback mentioned a secret; carries the redacted text."""


def _redact_failure(failure: Any) -> Any:
    """``failure`` itself, or, if its traceback shows a secret, a stand-in with the redacted text."""
    if not isinstance(failure, Failure) or not _secrets:
        return failure
    try:
        text = failure.getTraceback()
    except Exception:
        return failure
    if redact_text(text) == text:
        return failure
    return Failure(RedactedTraceback(redact_text(text)))


def redact_event(event: LogEvent) -> LogEvent:
    """A copy of ``event`` that renders without any secret, under any observer.

    The format fields are flattened (rendered to strings) here and redacted, so an observer
    that formats the event later uses those strings instead of calling ``str`` on objects
    that may contain the secret. The original event, shared with other observers, is untouched.
    """
    from twisted.logger._flatten import flattenEvent  # public through eventAsJSON only

    clean: dict[str, Any] = redact(dict(event))
    if "log_failure" in clean:
        clean["log_failure"] = _redact_failure(clean["log_failure"])
    try:
        flattenEvent(clean)
    except Exception:
        clean.pop("log_flattened", None)  # unformattable: formatEvent will say so, redacted
    if "log_flattened" in clean:
        clean["log_flattened"] = redact(clean["log_flattened"])
    return clean


def json_line(event: LogEvent) -> str:
    """One log event as one line of JSON (no newline inside it), secrets removed."""
    try:
        clean = redact_event(event)
        clean["log_message"] = redact_text(
            eventAsText(clean, includeTraceback=True, includeTimestamp=False, includeSystem=False)
        )
        structured = json.loads(eventAsJSON(clean))
        return json.dumps(redact(structured), separators=(",", ":")) + "\n"
    except Exception as e:  # an observer that raises is removed by Twisted: degrade instead
        fallback = {
            "log_namespace": redact(event.get("log_namespace")),
            "log_time": event.get("log_time"),
            "log_format": redact(event.get("log_format")),
            "log_message": "(this event could not be written as JSON)",
            "log_json_error": redact_text(f"{type(e).__name__}: {e}"),
        }
        return json.dumps(fallback, default=repr) + "\n"


@implementer(ILogObserver)
class RedactingObserver:
    """Passes each event on to ``inner`` with every registered secret and secret field removed."""

    def __init__(self, inner: Callable[[LogEvent], object]) -> None:
        self.inner = inner

    def __call__(self, event: LogEvent) -> None:
        try:
            clean = redact_event(event)
        except Exception as e:  # an observer that raises is removed by Twisted: degrade instead
            clean = {
                "log_level": event.get("log_level"),
                "log_namespace": event.get("log_namespace"),
                "log_time": event.get("log_time"),
                "log_format": "(an event could not be redacted: {error})",
                "error": redact_text(f"{type(e).__name__}: {e}"),
            }
        self.inner(clean)


def json_observer(out: IO[Any] | None = None) -> ILogObserver:
    """For ``twistd --logger bazar.logs.json_observer``: JSON lines on stdout (or ``out``).

    twistd calls this with no argument before it redirects ``sys.stdout`` into the log, so
    the observer keeps the real stdout and never feeds its own output back into itself.
    """
    return FileLogObserver(sys.stdout if out is None else out, json_line)


def text_observer(out: IO[Any] | None = None) -> ILogObserver:
    """For ``twistd --logger bazar.logs.text_observer``: twistd's usual text, secrets removed."""
    return RedactingObserver(textFileLogObserver(sys.stdout if out is None else out))
