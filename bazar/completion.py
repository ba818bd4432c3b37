"""Writes that run to their end even when their caller goes away (see ``runs_to_completion``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from bazar.errors import BazarError

log = Logger()

F = TypeVar("F", bound=Callable[..., Any])


def shielded(work: Deferred[Any]) -> Deferred[Any]:
    """``work``'s result, in a Deferred whose cancellation does not reach ``work``."""
    answer: Deferred[Any] = Deferred()

    def deliver(result: Any) -> None:
        if not answer.called:
            answer.callback(result)  # a Failure goes on as one
        elif isinstance(result, Failure) and not result.check(BazarError):
            log.failure("a write whose caller had gone failed", result)

    work.addBoth(deliver)
    return answer


def runs_to_completion(handler: F) -> F:
    """For write handlers: the write runs to its end even if its caller goes away.

    Klein cancels a handler's Deferred when the client disconnects, and a caller's deadline
    closes the connection too. Cancelled half-way, a purchase could take the stock and
    record no order, or a catalog write could commit without the front end being told to
    drop its copies. Shielded, only the answer is dropped.
    """

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        result = handler(*args, **kwargs)
        return shielded(result) if isinstance(result, Deferred) else result

    return run  # type: ignore[return-value]
