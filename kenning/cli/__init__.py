"""Kenning's command line: parse (options.py), one library call, print (output.py). Errors in the
user's input exit with code 2, in one line (app.py)."""

from kenning.cli import commands as _commands  # noqa: F401  (registers the commands on the app)
from kenning.cli import curation as _curation  # noqa: F401
from kenning.cli.app import app, os_error_line

__all__ = ["app", "main", "os_error_line"]


def main() -> None:
    """Typer handles usage errors (exit 2) and exit codes; `_OneLineErrors` Kenning's own."""
    app()
