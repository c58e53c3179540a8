"""The composition archive on the web (issue 7): pages, feeds, media and a JSON API over the bot's database."""

from bot.web.app import create_app

__all__ = ["create_app"]
