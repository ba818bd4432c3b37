"""``python -m bazar.bench``: the same as the ``bazar-bench`` console script."""

from __future__ import annotations

import sys

from bazar.bench.cli import main

sys.exit(main())
