"""Find marker tokens in Litestream LTX files (run by the litestream venv's python, which has lz4).

Standalone: stdlib + lz4 only, no walship import. Reads file paths on stdin,
prints one JSON object {path: [tokens]}.

LTX (superfly/ltx v0.5.2, as linked into Litestream 0.5.17): a 100-byte header
("LTX1", flags, page size, ...), then page frames until a zero 6-byte page header:
pgno u32 BE, flags u16 BE; with flag 0x0001 a u32 BE compressed size and a raw LZ4
block follow, without it (older writers) an LZ4 frame. Page index and trailer follow.
"""

import json
import re
import struct
import sys

import lz4.block  # type: ignore[import-not-found]
import lz4.frame  # type: ignore[import-not-found]

TOKEN = re.compile(rb"MRK[0-9a-f]{24}")
HEADER_SIZE = 100
FLAG_SIZE = 0x0001


def pages(data: bytes) -> list[bytes]:
    if data[:4] != b"LTX1":
        raise ValueError("not an LTX file")
    page_size = struct.unpack_from(">I", data, 8)[0]
    out: list[bytes] = []
    pos = HEADER_SIZE
    while True:
        pgno, flags = struct.unpack_from(">IH", data, pos)
        pos += 6
        if pgno == 0:
            return out
        if flags & FLAG_SIZE:
            (size,) = struct.unpack_from(">I", data, pos)
            out.append(lz4.block.decompress(data[pos + 4 : pos + 4 + size], uncompressed_size=page_size))
            pos += 4 + size
        else:
            decompressor = lz4.frame.LZ4FrameDecompressor()
            out.append(decompressor.decompress(data[pos:]))
            pos = len(data) - len(decompressor.unused_data)


def main() -> None:
    found: dict[str, list[str]] = {}
    for path in sys.stdin.read().split():
        with open(path, "rb") as f:
            data = f.read()
        found[path] = sorted({t.decode() for page in pages(data) for t in TOKEN.findall(page)})
    json.dump(found, sys.stdout)


if __name__ == "__main__":
    main()
