"""Error hierarchy. Every error a user can cause is a CvappsError; the CLI prints it
as one line (with its hint) and exits 2."""

from __future__ import annotations


class CvappsError(Exception):
    """Base class. ``hint`` says how to fix it; ``path`` names the offending file."""

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        self.path = str(path) if path is not None else None
        self.hint = hint
        prefix = f"{self.path}: " if self.path and self.path not in message else ""
        super().__init__(prefix + message)

    def one_line(self) -> str:
        msg = str(self).replace("\n", " ")
        return f"{msg} (hint: {self.hint})" if self.hint else msg


class DataError(CvappsError):
    """Bad input data: unreadable image, broken annotation, empty folder, unknown label."""


class ImageTooLarge(DataError):
    """An image (or video frame) declares more pixels than the limit (cvapps.data.io.max_pixels):
    refused from its header, before it is decoded."""


class ConfigError(CvappsError):
    """Bad option or argument combination, unknown registry name, wrong task."""


class WeightsError(CvappsError):
    """Weights could not be obtained or failed verification."""


class ShapeError(CvappsError):
    """A tensor had a shape other than the one a public function documents."""


class CvappsWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as a
    one-line note)."""
