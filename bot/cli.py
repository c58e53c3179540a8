"""The ``bot`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="The composing bot for Mastodon and X.", no_args_is_help=True, add_completion=False)


@app.command()
def genres() -> None:
    """List the genres the bot can compose, with their current model versions."""
    from composer.genres import list_genres
    from composer.registry import current_version

    for name in list_genres():
        typer.echo(f"{name:<12} {current_version(name) or '(no model yet)'}")


if __name__ == "__main__":
    app()
