"""Benchmarks of the composer, the service, the bot and the archive web: figures, not runtime code."""
