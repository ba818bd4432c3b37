"""The one process launcher: a role or a whole cluster on free ports, healthy, stopped by process group.

The benchmark, the integration tests and the network-namespace tests all start Bazar with it:
``processes`` (a child in a session of its own, stopped by pid, then by process group),
``cluster`` (``bazar-cluster`` on a fresh config, waited for until healthy) and ``probe``
(ports, ``/proc``, HTTP, polls with a deadline). ``Processes.stop_all`` belongs in a
``finally``, so that nothing is left running on errors and interrupts either. Everything
here is synchronous: it runs before, between and after the reactor's work.
"""

from __future__ import annotations

from bazar.launch.cluster import (
    CATALOGS,
    NAMES,
    ORDERS,
    REPLICAS,
    START_TIMEOUT,
    Cluster,
    Layout,
    cluster_status,
    holds_its_leases,
    loopback_ports,
    start_cluster,
    wait_healthy,
    write_config,
)
from bazar.launch.probe import (
    accepts_connections,
    free_ports,
    get_json,
    get_text,
    group_alive,
    listening_pid,
    poll,
    port_is_free,
    process_group,
    wait_for,
)
from bazar.launch.processes import (
    CHILDREN_TIMEOUT,
    CLEAN_EXIT,
    STOP_TIMEOUT,
    TWISTD,
    Process,
    Processes,
    StartError,
    Stopped,
    Unclean,
    kill_group,
    stop_group,
    twistd,
)

__all__ = [
    "CATALOGS",
    "CHILDREN_TIMEOUT",
    "CLEAN_EXIT",
    "NAMES",
    "ORDERS",
    "REPLICAS",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "TWISTD",
    "Cluster",
    "Layout",
    "Process",
    "Processes",
    "StartError",
    "Stopped",
    "Unclean",
    "accepts_connections",
    "cluster_status",
    "free_ports",
    "get_json",
    "get_text",
    "group_alive",
    "holds_its_leases",
    "kill_group",
    "listening_pid",
    "loopback_ports",
    "poll",
    "port_is_free",
    "process_group",
    "start_cluster",
    "stop_group",
    "twistd",
    "wait_for",
    "wait_healthy",
    "write_config",
]
