"""A deterministic simulator of a whole Bazar cluster that searches fault schedules for broken
guarantees (in the spirit of FoundationDB's simulation and TigerBeetle's VOPR); see
docs/simulator.md. ``python -m bazar.sim --runs N`` searches, ``--replay SEED`` shows one."""
