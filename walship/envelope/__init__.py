"""How an object is stored: compressed with zstd, then encrypted with age when the replica has recipients.

One seal/open pair for every object walship writes and reads; each object
records its envelope (``walship-envelope``) so restore picks the decoder from
the object itself. docs/FORMAT.md describes the envelopes.
"""

from walship.envelope._keys import IDENTITY_ENV, RECIPIENTS_ENV, Keyring, parse_recipients, recipients_from_env
from walship.envelope._replica import check_replica_sealing, recorded_encryption, replica_encrypted
from walship.envelope._seal import (
    ENVELOPES,
    ZSTD,
    ZSTD_AGE,
    ZSTD_FRAMES,
    Opened,
    Sealing,
    SegmentSealer,
    detect_envelope,
    is_encrypted,
    open_detected,
    open_to_file,
    require_keys,
    seal_blocks,
    seal_file,
    stored_bound,
)

__all__ = [
    "ENVELOPES",
    "IDENTITY_ENV",
    "RECIPIENTS_ENV",
    "ZSTD",
    "ZSTD_AGE",
    "ZSTD_FRAMES",
    "Keyring",
    "Opened",
    "Sealing",
    "SegmentSealer",
    "check_replica_sealing",
    "detect_envelope",
    "is_encrypted",
    "open_detected",
    "open_to_file",
    "parse_recipients",
    "recipients_from_env",
    "recorded_encryption",
    "replica_encrypted",
    "require_keys",
    "seal_blocks",
    "seal_file",
    "stored_bound",
]
