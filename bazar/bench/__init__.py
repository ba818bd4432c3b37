"""``bazar-bench``: reproduce the lab report's measurements on a real Bazar cluster.

The report timed a handful of requests by hand in Postman; this package repeats its
experiments (cache on/off, consistency, purchase mix, LRU behaviour, throughput) with
enough samples for percentiles, adds two (the front end's memory over a long run; a
purchase's floor: its messages with Bazar's work left out), and writes a table, CSV, JSON
and plots.

Modules: ``cli`` (orchestration), ``options`` (arguments), ``machine`` (what it ran on),
``cluster`` (its clusters and helper processes, started and stopped with ``bazar.launch``),
``load`` (a lean keep-alive HTTP client and bounded load loops), ``experiments`` (the seven
experiments, one module each, and the ``context`` they share), ``memory`` (reading a
process's resident memory, and whether it stayed flat), ``wrk`` (throughput runs),
``ceiling`` (a bare twisted.web server for the machine's ceiling), ``floor`` (one process of
a purchase's message chain, doing no work), ``stats`` (percentiles, summaries, ratios),
``report`` (tables and files), ``plots``.
"""
