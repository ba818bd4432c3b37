"""Bazar: a replicated, cached online bookstore on Twisted."""
