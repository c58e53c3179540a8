"""The bot: platforms, the worker and the composition archive."""
