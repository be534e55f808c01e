"""Composition root: settings, Temporal wiring and the `primus-safe` CLI."""
