"""The age options of the commands that write objects (recipients) and read them (an identity)."""

import argparse
import os
from pathlib import Path

from walship import codec, envelope

__all__ = ["add_options", "identity_file", "sealing"]


def add_options(writers: tuple[argparse.ArgumentParser, ...], readers: tuple[argparse.ArgumentParser, ...]) -> None:
    """``--age-recipient`` for the commands that write objects, ``--age-identity`` for those that read them."""
    for parser in writers:
        recipient_option(parser)
    for parser in readers:
        identity_option(parser)


def recipient_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--age-recipient",
        dest="age_recipients",
        action="append",
        default=[],
        metavar="RECIPIENT",
        help=f"encrypt objects with age for this public key (repeatable; default: ${envelope.RECIPIENTS_ENV}, "
        "comma-separated)",
    )


def identity_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--age-identity",
        type=Path,
        metavar="FILE",
        help=f"age identity file that opens encrypted objects (default: ${envelope.IDENTITY_ENV})",
    )


def identity_file(args: argparse.Namespace) -> Path | None:
    """The identity file given or named by the environment, read once here so a bad one fails before any work."""
    given = args.age_identity or os.environ.get(envelope.IDENTITY_ENV) or None
    if given is None:
        return None
    path = Path(given)
    envelope.Keyring.from_file(path)
    return path


def sealing(args: argparse.Namespace) -> envelope.Sealing:
    return envelope.Sealing(
        level=codec.validate_level(args.level), recipients=envelope.recipients_from_env(args.age_recipients)
    ).check()
