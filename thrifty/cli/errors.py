"""Bad input from the command line, and the checks every command shares, each failing as one ``UsageError`` line."""

from __future__ import annotations

from pathlib import Path

__all__ = ["UsageError", "at_least", "output_folder"]


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


def at_least(flag: str, value: float | None, minimum: float = 1) -> None:
    """Raise ``UsageError`` unless ``value`` (``None``: not given) is at least ``minimum``."""
    if value is not None and not value >= minimum:
        raise UsageError(f"{flag} must be >= {minimum:g}, got {value}")


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as the folder a command will write to, checked before any work starts (created later)."""
    out = Path(path)
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise UsageError(f"{flag} {str(out)!r}: {str(p)!r} is a file, not a folder")
    return out
