"""Sizes as people read them, for status lines and artifacts."""

__all__ = ["human_bytes"]


def human_bytes(count: int) -> str:
    """``123 B``, ``4.5 MiB``, ``1.2 TiB``."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
