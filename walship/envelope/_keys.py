"""age recipients (public, may travel as parameters) and identities (secret, never shown).

pyrage is imported when a key is first parsed: a replica without recipients
never needs it, and a shipper that imports it stays 1 MiB larger for days.
"""

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from walship.errors import UsageError

__all__ = ["IDENTITY_ENV", "RECIPIENTS_ENV", "Keyring", "parse_recipients", "recipients_from_env"]

RECIPIENTS_ENV = "WALSHIP_AGE_RECIPIENTS"
IDENTITY_ENV = "WALSHIP_AGE_IDENTITY_FILE"

# pyrage ships no type information: its key objects are opaque here.
Recipient = object
Identity = object


def recipients_from_env(given: Sequence[str]) -> tuple[str, ...]:
    """The recipients given on the command line, else those of ``WALSHIP_AGE_RECIPIENTS`` (comma-separated)."""
    if given:
        return tuple(given)
    return tuple(r.strip() for r in os.environ.get(RECIPIENTS_ENV, "").split(",") if r.strip())


def parse_recipients(recipients: Iterable[str]) -> list[Recipient]:
    """age's own recipients (``age1...``) and SSH public keys, as age accepts them."""
    parsed: list[Recipient] = []
    for given in recipients:
        import pyrage  # noqa: PLC0415 - see the module docstring

        text = given.strip()
        try:
            if text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
                parsed.append(pyrage.ssh.Recipient.from_str(text))
            else:
                parsed.append(pyrage.x25519.Recipient.from_str(text))
        except (pyrage.RecipientError, ValueError):
            # The recipient is public: naming it helps and reveals nothing.
            raise UsageError(
                f"age recipient {text!r} is not valid: give an age public key (age1...) or an SSH public key"
            ) from None
    return parsed


class Keyring:
    """The identities that open a replica's objects: held in memory, never logged, never pickled."""

    def __init__(self, identities: Sequence[Identity], source: str) -> None:
        self._identities = list(identities)
        # Where they came from (a file name, a block name): what messages may show.
        self.source = source

    def __repr__(self) -> str:
        return f"Keyring({len(self._identities)} identities from {self.source})"

    def __reduce__(self) -> str:
        raise TypeError("a Keyring holds secret keys and is never pickled")

    @property
    def identities(self) -> list[Identity]:
        return list(self._identities)

    @classmethod
    def from_text(cls, text: str, source: str) -> "Keyring":
        """An age identity file's content: ``AGE-SECRET-KEY-1...`` lines; ``#`` comments and blank lines skipped."""
        import pyrage  # noqa: PLC0415 - see the module docstring

        identities: list[Identity] = []
        lines = [line.strip() for line in text.splitlines()]
        if any(line.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") for line in lines):
            try:
                return cls([pyrage.ssh.Identity.from_buffer(text.encode())], source)
            except (pyrage.IdentityError, ValueError):
                raise UsageError(f"{source} holds an SSH key walship cannot use: give an age identity file") from None
        for number, line in enumerate(lines, start=1):
            if not line or line.startswith("#"):
                continue
            try:
                identities.append(pyrage.x25519.Identity.from_str(line))
            except (pyrage.IdentityError, ValueError):
                # Never the line itself: it may be a damaged secret key.
                raise UsageError(
                    f"{source}, line {number}, is not an age identity: give a file made by age-keygen"
                ) from None
        if not identities:
            raise UsageError(f"{source} holds no age identity: give a file made by age-keygen")
        return cls(identities, source)

    @classmethod
    def from_file(cls, path: Path) -> "Keyring":
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the age identity file {path}: {exc.strerror or exc}") from None
        return cls.from_text(text, str(path))
