"""The `screamdetect` command. Holds no logic: parses options, calls the modules, prints results.

Each command imports its module lazily so that `screamdetect detect` needs only the inference dependencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Detect human screams in audio files and live streams; reproduce and extend the scream-"
                       "detection study (EDA, model grid, cross-dataset phases).")
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """screamdetect: scream detection for files and live audio."""


def fail(msg: str, code: int = 2) -> None:
    """Print a one-line error (no traceback) and exit."""
    err.print(f"[red]error:[/red] {msg}", highlight=False)
    raise typer.Exit(code)


# ---- eda (issue 2) -------------------------------------------------------------------------------------------
@app.command()
def eda(data: Path = typer.Argument(..., help="Dataset folder (class folders or manifest.csv) or a manifest CSV."),
        out: Path = typer.Option(Path("runs/eda"), "--out", "-o", help="Output folder (features.csv, report.html).")):
    """Exploratory data analysis: the study's 17 features per clip, plots, and an HTML report."""
    fail("eda: not implemented yet")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
