"""What must hold after any fault: the conservation of stock, now in ``bazar.sim.stock`` (the
simulator checks it after every run); kept here for the tests that import it from here."""

from __future__ import annotations

from bazar.sim.stock import Log, stock_problems

__all__ = ["Log", "stock_problems"]
