"""``bazar-bench``: reproduce the lab report's measurements on a real Bazar cluster.

The report timed a handful of requests by hand in Postman; this package repeats its
experiments (cache on/off, consistency, purchase mix, LRU behaviour, throughput) with
enough samples for percentiles, adds one (the front end's memory over a long run), and
writes a table, CSV, JSON and plots.

Modules: ``cli`` (arguments, orchestration), ``cluster`` (start/stop clusters and helper
processes by PID), ``load`` (a lean keep-alive HTTP client and bounded load loops),
``experiments`` (the six experiments), ``memory`` (reading a process's resident memory, and
whether it stayed flat), ``wrk`` (throughput runs), ``ceiling`` (a bare twisted.web server for
the machine's ceiling), ``report`` (statistics, tables, files, plots).
"""
