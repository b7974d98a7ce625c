"""Typed access to query attributes with the original's parsing rules (protocol.md §3.0).

Integers follow C ``stoi``: leading blanks, a sign, digits, then anything (``"12abc"`` = 12);
no digits or out of the 32-bit range is INVALID_INTEGER. Booleans are ``yes``/``no`` or such
an integer (non-zero = true); ``true``/``false`` are rejected. Base64 is decoded leniently.
Method names mirror the types (``.int()``, ``.bool()``...), so annotations inside the class
spell the built-ins as ``builtins.int`` and so on.
"""

from __future__ import annotations

import binascii
import builtins
import re
from typing import Final, TypeVar, overload

from lxml import etree

from evqueue.protocol.errors import ApiError

__all__ = ["REQUIRED", "Params", "decode_base64"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()
"""Default meaning "the attribute must be present" (MISSING_PARAMETER otherwise)."""

T = TypeVar("T")

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_STOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*(=*)")
_BLANKS = b" \t\r\n"


def _stoi(value: str) -> int | None:
    """C ``stoi``: the leading integer of ``value``, or None where stoi would throw."""
    m = _STOI.match(value)
    if m is None:
        return None
    number = int(m.group(1))
    return number if _INT_MIN <= number <= _INT_MAX else None


def decode_base64(value: str) -> bytes | None:
    """Lenient base64 (blanks ignored, trailing partial quantum dropped); None if invalid."""
    try:
        data = value.encode("ascii").translate(None, _BLANKS)
    except UnicodeEncodeError:
        return None
    m = _BASE64.fullmatch(data)
    if m is None:
        return None
    padding = len(m.group(1))
    core = data[: len(data) - padding]
    partial = len(core) % 4
    if partial >= 2 and partial + padding == 4:
        core += b"=" * padding  # a padded last quantum is complete
    else:
        core = core[: len(core) - partial]
    return binascii.a2b_base64(core)


class Params:
    """Attributes of a query's root element (and its ``<parameter>`` children)."""

    __slots__ = ("elem",)

    def __init__(self, elem: etree._Element) -> None:
        self.elem = elem

    @staticmethod
    def _absent(name: builtins.str, default: object) -> object:
        """The value of an absent attribute: ``default``, or MISSING_PARAMETER if required."""
        if default is REQUIRED:
            raise ApiError("MISSING_PARAMETER", f"Missing '{name}' attribute")
        return default

    @overload
    def str(self, name: builtins.str) -> builtins.str: ...
    @overload
    def str(self, name: builtins.str, default: T) -> builtins.str | T: ...

    def str(self, name: builtins.str, default: object = REQUIRED) -> object:
        """The attribute as text."""
        value = self.elem.get(name)
        return self._absent(name, default) if value is None else value

    @overload
    def int(self, name: builtins.str) -> builtins.int: ...
    @overload
    def int(self, name: builtins.str, default: T) -> builtins.int | T: ...

    def int(self, name: builtins.str, default: object = REQUIRED) -> object:
        """A signed 32-bit integer, parsed like C ``stoi``."""
        value = self.elem.get(name)
        if value is None:
            return self._absent(name, default)
        return self._int_value(name, value)

    @staticmethod
    def _int_value(name: builtins.str, value: builtins.str) -> builtins.int:
        number = _stoi(value)
        if number is None:
            raise ApiError("INVALID_INTEGER", f"Attribute '{name}' has invalid integer value")
        return number

    @overload
    def uint(self, name: builtins.str) -> builtins.int: ...
    @overload
    def uint(self, name: builtins.str, default: T) -> builtins.int | T: ...

    def uint(self, name: builtins.str, default: object = REQUIRED) -> object:
        """An integer stored into an unsigned int, as most handlers do (``-1`` → 4294967295)."""
        value = self.elem.get(name)
        if value is None:
            return self._absent(name, default)
        return self._int_value(name, value) % 2**32

    @overload
    def bool(self, name: builtins.str) -> builtins.bool: ...
    @overload
    def bool(self, name: builtins.str, default: T) -> builtins.bool | T: ...

    def bool(self, name: builtins.str, default: object = REQUIRED) -> object:
        """``yes``/``no`` or an integer (non-zero = true); anything else is INVALID_BOOLEAN."""
        value = self.elem.get(name)
        if value is None:
            return self._absent(name, default)
        if value == "yes":
            return True
        if value == "no":
            return False
        number = _stoi(value)
        if number is None:
            raise ApiError("INVALID_BOOLEAN", f"Attribute '{name}' has invalid boolean value")
        return number != 0

    @overload
    def base64(self, name: builtins.str) -> bytes: ...
    @overload
    def base64(self, name: builtins.str, default: T) -> bytes | T: ...

    def base64(self, name: builtins.str, default: object = REQUIRED) -> object:
        """Decoded base64; invalid characters are INVALID_PARAMETER "Invalid base64 sequence"."""
        value = self.elem.get(name)
        if value is None:
            return self._absent(name, default)
        data = decode_base64(value)
        if data is None:
            raise ApiError("INVALID_PARAMETER", "Invalid base64 sequence")
        return data

    def workflow_parameters(self) -> list[tuple[builtins.str, builtins.str]]:
        """Direct ``<parameter name value/>`` children; the first of duplicate names wins."""
        seen: dict[builtins.str, builtins.str] = {}
        for child in self.elem.iterchildren("parameter"):
            seen.setdefault(child.get("name", ""), child.get("value", ""))
        return list(seen.items())

    def prefixed(self, prefix: builtins.str) -> dict[builtins.str, builtins.str]:
        """Attributes named ``<prefix><X>`` as ``{X: value}`` (``parameter_X`` filters...)."""
        size = len(prefix)
        return {key[size:]: value for key, value in self.elem.items() if key.startswith(prefix)}
