"""Social platforms behind one interface: where mentions come from and replies go."""

from __future__ import annotations

from bot.config import BotSettings
from bot.platforms.base import Platform


def platform_from_settings(settings: BotSettings) -> Platform:
    """The platform BOT_PLATFORM names, configured from the settings."""
    if settings.bot_platform == "mastodon":
        from bot.platforms.mastodon import MastodonPlatform

        return MastodonPlatform.from_settings(settings)
    from bot.platforms.twitter import TwitterPlatform

    return TwitterPlatform.from_settings(settings)
