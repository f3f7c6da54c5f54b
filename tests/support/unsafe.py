"""A pickle payload for tests of loaders: unpickling it creates a marker file."""

from __future__ import annotations

from pathlib import Path


class Payload:
    """Unpickling this object creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")
