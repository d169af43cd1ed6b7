"""Durability helpers: a rename is only durable once its directory is fsynced."""

import os
from pathlib import Path

__all__ = ["fsync_dir", "fsync_path"]


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    fsync_path(directory)
