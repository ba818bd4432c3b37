"""The reactors Bazar's processes and its bench need, named as interfaces (as treq's
``_ITreqReactor`` does) rather than ``Any``, and the running reactor typed as one of them.

An intersection is an interface that extends the ones it needs: the real reactor provides
each part, and mypy-zope checks every call against them.
"""

from __future__ import annotations

from typing import TypeVar, cast

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorPluggableNameResolver,
    IReactorProcess,
    IReactorTCP,
    IReactorTime,
)


class IClientReactor(IReactorTCP, IReactorTime):
    """The bench's load generator: it connects over TCP and times out its requests."""


class IServerReactor(IClientReactor, IReactorCore, IReactorPluggableNameResolver):
    """A role's process: its listeners (``strports.service``) and its treq ``Agent``
    (``HostnameEndpoint``: TCP, time, name resolution) run on it."""


class ISupervisorReactor(IReactorProcess, IReactorTime):
    """``bazar-cluster``: spawns its children and times their restarts and its own stop."""


class IBenchReactor(IServerReactor, IReactorProcess):
    """The bench: its clients (its own and treq's), wrk as a child process stopped by a
    shutdown trigger, and the small servers it measures against."""


R = TypeVar("R")


def running_reactor(kind: type[R]) -> R:
    """The global reactor (installed on import) as ``kind``: it provides every interface above."""
    from twisted.internet import reactor

    return cast(R, reactor)
