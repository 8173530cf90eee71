"""The Typer app and what every command shares: errors end as one line and exit code 2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from kenning.config import Config, load_config, parse_assignment
from kenning.errors import KenningError, one_line


class _OneLineErrors(TyperGroup):
    """Kenning's own errors, and the operating system's (disk full, permission denied), end a command
    as one line on stderr and exit code 2, never a traceback; in-process callers (tests) see the same."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KenningError as exc:
            message = str(exc)
        except OSError as exc:
            message = os_error_line(exc)
        typer.echo(f"error: {one_line(message)}", err=True)
        raise typer.Exit(2)


def os_error_line(exc: OSError) -> str:
    """The operating system's words and the file (disk full: path); a library's OSError keeps its message."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror}{where}" if exc.strerror else f"{type(exc).__name__}: {exc or 'no details'}"


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Recognise instances (a landmark, one particular whale) from photos, or say they are new.",
)


@app.callback()
def _options(
    max_pixels: Annotated[
        int,
        typer.Option(
            envvar="KENNING_MAX_PIXELS",
            help="Largest image (width x height) any command decodes; larger ones are refused (decompression bombs).",
        ),
    ] = 89_478_485,
) -> None:
    from kenning.data.images import set_max_pixels

    set_max_pixels(max_pixels)


def command_config(path: Path | None, sets: list[str] | None, flags: dict[str, Any]) -> Config:
    """Defaults, then the YAML file, then --set assignments, then the command's own options."""
    overrides = dict(parse_assignment(s) for s in sets or [])
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return load_config(path, overrides)
