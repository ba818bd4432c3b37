"""Profiling on a signal, in every Python process started with this directory on PYTHONPATH.

``python -m bazar.bench.profile`` starts a cluster with this directory first on its
PYTHONPATH and ``BAZAR_PROFILE`` set to a directory, so that Python loads this module in
every process of the cluster as it starts (``site`` imports ``sitecustomize``), whatever
version of Bazar the processes run: the code before a change can be profiled the same way.

With ``BAZAR_PROFILE`` set, SIGUSR1 starts a cProfile of the main thread (where the reactor
runs) and SIGUSR2 stops it and writes ``<BAZAR_PROFILE>/<pid>.pstats``: only the measured
window is profiled, not the start-up. Without it, this module does nothing. The profile
keeps cProfile's own clock (wall time, read through the vDSO): the reactor's wait in
``epoll`` is left out by the reader (``bazar.bench.profile``). ``time.thread_time`` would
count CPU time alone, but reading it is a system call, twice per function call: profiled
processes ran 15 times slower with it, and functions called often looked costlier than
they are.
"""

import os

if os.environ.get("BAZAR_PROFILE"):
    import cProfile
    import signal

    _profile = cProfile.Profile()

    def _start(signum, frame):  # type: ignore[no-untyped-def]
        _profile.enable()

    def _stop(signum, frame):  # type: ignore[no-untyped-def]
        _profile.disable()
        path = os.path.join(os.environ["BAZAR_PROFILE"], f"{os.getpid()}.pstats")
        _profile.dump_stats(path + ".part")
        os.replace(path + ".part", path)  # whole, or not there

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
