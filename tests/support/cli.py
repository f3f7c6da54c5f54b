"""Running the ``ked`` entry point in this process, as a user's shell would (argv in, exit code
and output back): faster than a subprocess once torch is imported."""

from __future__ import annotations

import sys

import pytest

from ked.cli import main


def run_ked(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``ked ARGS`` through its console-script entry point."""
    capsys.readouterr()
    argv = sys.argv
    sys.argv = ["ked", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err
