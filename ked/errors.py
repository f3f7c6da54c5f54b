"""The one exception type for faults that the user fixes: a bad file, a busy database, a typo.

Raised where a file is opened or an input is checked, with a message that names the file and
what is wrong. The command line prints that message as one line and exits with code 2 (the
traceback only with ``-v``). Importing this module imports nothing else, so every layer can
use it.
"""

from __future__ import annotations


class UserError(Exception):
    """A fault in the user's files, inputs or environment; ``str(error)`` is the whole story."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """A library error as ``Type: message`` on one line, cut to ``limit`` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
