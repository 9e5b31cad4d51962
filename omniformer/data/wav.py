"""The length a WAV file's header declares, to catch a file cut short with its header intact.

libsndfile (behind ``soundfile``) trusts the bytes that are there: a WAV whose data chunk lost its
second half reads as a shorter clip, without a word. The RIFF header still says how many bytes of
audio the writer put in the ``data`` chunk; :func:`declared_frames` reads that, so the loader can
compare it with the frames actually read.
"""

from __future__ import annotations

import struct
from pathlib import Path

#: ``data`` chunk sizes a streaming writer leaves when it never learns the final length.
UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def declared_frames(path: str | Path) -> int | None:
    """Frames the ``data`` chunk of a RIFF/RIFX WAVE file declares (its byte size over the ``fmt``
    block align); ``None`` for other files, an unknown (streamed) length or a header cut too short
    to say (soundfile then refuses the file itself)."""
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        order = "<" if head[:4] == b"RIFF" else ">"
        block_align = None
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            kind, size = chunk[:4], struct.unpack(f"{order}I", chunk[4:])[0]
            if kind == b"fmt ":
                body = handle.read(size + (size & 1))
                if len(body) >= 14:
                    block_align = struct.unpack(f"{order}H", body[12:14])[0]
            elif kind == b"data":
                if size in UNKNOWN_SIZES or not block_align:
                    return None
                return size // block_align
            else:
                handle.seek(size + (size & 1), 1)  # chunks are padded to an even size
