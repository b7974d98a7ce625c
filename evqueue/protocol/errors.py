"""The one error type that crosses layers and becomes a KO response."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered to the client as ``status="KO"``.

    ``code`` is the original engine's ``error-code`` value, or ``None`` where the original
    sends a KO without a code (workflow XSD errors, "Tag not found", ...). ``fatal`` closes
    the connection after the answer (auth failures, malformed XML).
    """

    def __init__(self, code: str | None, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, {self.message!r})"
