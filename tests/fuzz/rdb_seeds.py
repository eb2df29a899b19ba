#!/usr/bin/env python3
"""Writes the hand-built RDB seeds of tests/fuzz/corpus/rdb (also read by the unit
tests in tests/unit/redis/rdb_reader_test.cpp): RDB 12 with hash field expiry, the
slot-info opcode and a function library, and RDBs whose inner encodings Redis refuses.

    python3 tests/fuzz/rdb_seeds.py [OUT_DIR]   (default: tests/fuzz/corpus/rdb)

Every byte is laid out here from the format's definition (Redis' rdb.h, listpack.c,
ziplist.c, intset.c), since Debian's redis-server (7.0) cannot write RDB 12."""
import struct
import sys
from pathlib import Path


def crc64(data: bytes, crc: int = 0) -> int:
    """Redis' CRC-64 (Jones polynomial, reflected, initial value 0)."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x95AC9329AC4BC9B5 if crc & 1 else 0)
    return crc


def length(n: int) -> bytes:
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    return b"\x80" + struct.pack(">I", n)


def string(s: bytes) -> bytes:
    return length(len(s)) + s


def rdb(version: int, body: bytes) -> bytes:
    data = b"REDIS%04d" % version + b"\xfa" + string(b"redis-ver") + string(b"7.4.1") + body + b"\xff"
    return data + struct.pack("<Q", crc64(data))


# ---- listpack ----------------------------------------------------------------------
def lp_backlen(n: int) -> bytes:
    """7-bit groups, highest first; every byte but the leftmost has bit 7 set (it is
    read right to left, and the bit says that more bytes follow)."""
    groups = []
    while True:
        groups.insert(0, n & 127)
        n >>= 7
        if not n:
            break
    return bytes([groups[0]] + [g | 128 for g in groups[1:]])


def lp_entry(v) -> bytes:
    if isinstance(v, int):
        if 0 <= v < 128:
            enc = bytes([v])
        else:
            enc = b"\xf4" + struct.pack("<q", v)
    else:
        assert len(v) < 64
        enc = bytes([0x80 | len(v)]) + v
    return enc + lp_backlen(len(enc))


def listpack(items, count=None) -> bytes:
    body = b"".join(lp_entry(v) for v in items)
    total = 6 + len(body) + 1
    return struct.pack("<IH", total, len(items) if count is None else count) + body + b"\xff"


# ---- ziplist -----------------------------------------------------------------------
def ziplist(items) -> bytes:
    entries, prev, offsets = b"", 0, []
    for s in items:
        assert len(s) < 64 and prev < 254
        e = bytes([prev, len(s)]) + s
        offsets.append(10 + len(entries))
        entries += e
        prev = len(e)
    tail = offsets[-1] if offsets else 10
    return struct.pack("<IIH", 10 + len(entries) + 1, tail, len(items)) + entries + b"\xff"


def intset(enc: int, values) -> bytes:
    fmt = {2: "<h", 4: "<i", 8: "<q"}.get(enc, "<h")
    return struct.pack("<II", enc, len(values)) + b"".join(struct.pack(fmt, v) for v in values)


FIELD_EXPIRY = 1893456000000  # 2030-01-01, in ms
LIBRARY = b"#!lua name=seedlib\nredis.register_function('seedfn', function() return 'seed' end)"


def seeds():
    ms = struct.pack("<Q", FIELD_EXPIRY)
    v12 = (b"\xf5" + string(LIBRARY)  # a function library
           + b"\xfe\x00\xfb\x05\x00"  # SELECTDB 0, RESIZEDB 5 0
           + b"\xf4\x00\x05\x00"      # SLOT_INFO: slot 0, 5 keys, 0 expires
           + b"\x19" + string(b"h:lpex") + ms + string(listpack([b"f1", b"v1", FIELD_EXPIRY, b"f2", b"v2", 0]))
           + b"\x18" + string(b"h:meta") + ms + length(2) + length(1) + string(b"f1") + string(b"v1")
           + length(0) + string(b"f2") + string(b"v2")
           + b"\x17" + string(b"h:lpex-rc") + string(listpack([b"f", b"v", FIELD_EXPIRY]))
           # type 22 stores the absolute expiry as a length: 0x81 and 8 bytes big-endian
           + b"\x16" + string(b"h:meta-rc") + length(1) + b"\x81" + struct.pack(">Q", FIELD_EXPIRY)
           + string(b"f") + string(b"v")
           + b"\x00" + string(b"s") + string(b"plain"))
    good_lp = listpack([b"a", b"b", b"c", b"d"])  # a hash: a=b, c=d
    bad_backlen = bytearray(good_lp)
    bad_backlen[6 + 2] = 5  # the first entry's back-length says 5, the entry has 2 bytes
    zl = ziplist([b"one", b"two", b"three"])
    return {
        "v12_hash_field_expiry": rdb(12, v12),
        "function_library": rdb(10, b"\xf5" + string(LIBRARY) + b"\xfe\x00\x00" + string(b"k") + string(b"v")),
        "empty_list_skipped": rdb(10, b"\xfe\x00\x01" + string(b"empty") + length(0)
                                  + b"\x00" + string(b"k") + string(b"v")),
        "bad_ziplist_truncated": rdb(10, b"\xfe\x00\x0a" + string(b"l") + string(zl[:-4])),
        "bad_listpack_backlen": rdb(10, b"\xfe\x00\x10" + string(b"h") + string(bytes(bad_backlen))),
        "bad_intset_encoding": rdb(10, b"\xfe\x00\x0b" + string(b"i") + string(intset(3, [1, 2]))),
        "good_packed": rdb(10, b"\xfe\x00\x10" + string(b"h") + string(good_lp)
                           + b"\x0a" + string(b"l") + string(zl)
                           + b"\x0b" + string(b"i") + string(intset(2, [1, 2, 300]))),
    }


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "corpus" / "rdb"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (out / f"{name}.rdb").write_bytes(data)


if __name__ == "__main__":
    main()
