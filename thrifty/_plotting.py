"""matplotlib's pyplot on the file-only Agg backend: thrifty writes figures to files and never opens a window, so
plotting works on machines without a display. Every module that plots gets pyplot here."""

from __future__ import annotations

from types import ModuleType

__all__ = ["pyplot"]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` with the Agg backend selected (imported on first use: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
