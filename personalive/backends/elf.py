"""The shared libraries an ELF shared object needs (its ``DT_NEEDED`` entries), read without external tools.

Used on the C++ wrapper inside an AOTInductor package: whether it links libstdc++ dynamically decides whether it
can be loaded into PyTorch's process at all (see :mod:`personalive.backends.aoti`). ``readelf`` and ``ldd`` are
not on every machine, and the check has to run before the package is loaded, so it is done here from the ELF
headers: the section headers, the ``SHT_DYNAMIC`` section and the string table it links to.
"""

from __future__ import annotations

import struct

SHT_DYNAMIC = 6
DT_NULL, DT_NEEDED = 0, 1


def needed_libraries(data: bytes) -> list[str] | None:
    """The ``DT_NEEDED`` names of a 64-bit little-endian ELF image, in order; None if ``data`` is not one
    (another class or byte order, or not an ELF file): the caller then has no answer, not an empty one."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    if shoff == 0 or shentsize < 64 or shoff + shnum * shentsize > len(data):
        return None
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names: list[str] = []
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != SHT_DYNAMIC or link >= len(sections):
            continue
        strtab_offset, strtab_size = sections[link][4], sections[link][5]
        for pos in range(offset, offset + size, entsize or 16):
            tag, value = struct.unpack_from("<qQ", data, pos)
            if tag == DT_NULL:
                break
            if tag == DT_NEEDED and value < strtab_size:
                start = strtab_offset + value
                names.append(data[start : data.index(b"\0", start)].decode("utf-8", "replace"))
    return names
