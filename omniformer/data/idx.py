"""IDX files (LeCun's MNIST format): check that a file's size is the one its header declares.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the values. torchvision reads the whole file and reshapes it to the
header's dimensions, so a truncated download fails with a reshape error that names no file; this
check runs first and names the file, the declared shape and both sizes.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

#: IDX type code → (name, bytes per value).
IDX_TYPES = {
    0x08: ("uint8", 1),
    0x09: ("int8", 1),
    0x0B: ("int16", 2),
    0x0C: ("int32", 4),
    0x0D: ("float32", 4),
    0x0E: ("float64", 8),
}


def check_idx(path: str | Path) -> tuple[int, ...]:
    """The shape ``path``'s header declares; one error naming the file if its size does not match."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        magic = handle.read(4)
        if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in IDX_TYPES or magic[3] == 0:
            raise ValueError(
                f"{path}: not an IDX file (magic bytes {magic.hex() or 'missing'}, file of {size} bytes); "
                "delete it and download the dataset again"
            )
        ndim = magic[3]
        dims = handle.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({size} bytes, {ndim} dimensions declared)")
    shape = struct.unpack(f">{ndim}I", dims)
    name, width = IDX_TYPES[magic[2]]
    expected = 4 + 4 * ndim + math.prod(shape) * width
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise ValueError(
            f"{path}: {state}: its header declares {'×'.join(map(str, shape))} {name} values, "
            f"{expected} bytes in all, but the file holds {size} bytes; delete it and download again"
        )
    return shape
