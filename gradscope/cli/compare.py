"""`gradscope compare` (not yet written)."""

import typer


def register(app: typer.Typer) -> None:
    """Nothing yet."""
