"""Human-readable numbers shared by the front ends."""

from __future__ import annotations

from internlocal.i18n import _


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_count(n: int | None) -> str:
    """134515008 → '134.5M'."""
    if not n:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + unit
    return str(n)


def rough_duration(seconds: float) -> str:
    """An estimate in words: "under a minute", "about 4 min", "about 2.5 h"."""
    if seconds < 60:
        return _("under a minute")
    if seconds < 3600:
        return _("about {minutes} min").format(minutes=round(seconds / 60))
    return _("about {hours:.1f} h").format(hours=seconds / 3600)


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"
