# Copyright: cyrus.ha contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the tests read of a PNG a real renderer wrote (rsvg-convert, a browser's screenshot): its size and
its decompressed pixel rows, enough to tell a picture from a blank page. Standard library only."""

from __future__ import annotations

import struct
import zlib


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and data[12:16] == b'IHDR'
    return struct.unpack('>II', data[16:24])


def png_pixels(data: bytes) -> bytes:
    chunks, at = [], 8
    while at < len(data):
        length, kind = struct.unpack('>I4s', data[at:at + 8])
        if kind == b'IDAT':
            chunks.append(data[at + 8:at + 8 + length])
        at += 12 + length
    return zlib.decompress(b''.join(chunks))
