"""Client-side exceptions.

Two families on purpose: :class:`EvqError` means the server answered (a ``status="KO"``
response, carrying its ``error-code``), :class:`EvqConnectionError` means no usable answer came
back. Federation fails over on the second family only, so they never share a base class below
``Exception``.
"""

from __future__ import annotations

from lxml import etree


class EvqError(Exception):
    """A KO answer: ``code`` is the server's ``error-code`` (None when it sent none)."""

    def __init__(
        self, code: str | None, message: str, response: etree._Element | None = None
    ) -> None:
        super().__init__(f"{message} ({code})" if code else message)
        self.code = code
        self.message = message
        self.response = response

    @classmethod
    def from_response(cls, response: etree._Element) -> EvqError:
        """The error a KO ``<response>`` document stands for."""
        return cls(
            response.get("error-code"), response.get("error", "(no error message)"), response
        )


class EvqConnectionError(ConnectionError):
    """No usable answer: connect failure, closed connection, timeout or protocol violation.

    ``sent`` tells whether the query may have reached the server; federation only retries a
    launch elsewhere when it did not, so an instance is never launched twice.
    """

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class EvqTimeout(EvqConnectionError, TimeoutError):
    """The server did not answer within the client's timeout (the connection is dropped)."""


class ProtocolError(EvqConnectionError):
    """The server sent something this protocol does not allow (the connection is dropped)."""


class AllServersFailed(EvqConnectionError):
    """Every server of a federation failed; ``errors`` maps each URL to its failure."""

    def __init__(self, errors: dict[str, EvqConnectionError]) -> None:
        detail = "; ".join(f"{url}: {err}" for url, err in errors.items())
        super().__init__(
            f"no server available ({detail})", sent=any(e.sent for e in errors.values())
        )
        self.errors = errors
