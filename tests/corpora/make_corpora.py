#!/usr/bin/python3
"""Writes the hostile corpora of issue 9, scenario 16, next to this script:

  tar/*.tar  archives a files restore must refuse without writing anything anywhere
             (path traversal, absolute names, symlink escapes, devices, fifos, hard
             links to outside files);
  rdb/*.rdb  RDB files for a redis restore: good.rdb (valid, version 9, CRC-64 right)
             and what must be refused: truncated, bit-flipped (CRC mismatch), garbage,
             and an RDB of version 12, newer than what the test machine's Redis loads.

Deterministic: running it again rewrites identical bytes. Usage: make_corpora.py [DIR]
"""
import io
import sys
import tarfile
from pathlib import Path

OUTSIDE = "/tmp/mevb-corpus-outside"  # an absolute path no test ever creates


def tar_bytes(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for kind, name, arg in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o644
            if kind == "file":
                data = arg.encode()
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, arg
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, arg
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "blk":
                info.type, info.devmajor, info.devminor = tarfile.BLKTYPE, 8, 0
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            t.addfile(info)
    return buf.getvalue()


TARS = {
    "dotdot": [("file", "ok.txt", "fine"), ("file", "../mevb-corpus-escaped.txt", "pwned")],
    "dotdot-deep": [("dir", "a", None), ("file", "a/../../mevb-corpus-escaped.txt", "pwned")],
    "absolute": [("file", OUTSIDE + "/abs.txt", "pwned")],
    "symlink-relative-escape-then-write": [("symlink", "link", "../outside"), ("file", "link/through.txt", "pwned")],
    "symlink-absolute-then-write": [("symlink", "link", OUTSIDE), ("file", "link/through.txt", "pwned")],
    "symlink-escape-only": [("symlink", "up", "../../outside/victim.txt")],
    "device-char": [("file", "ok.txt", "fine"), ("chr", "null-copy", None)],
    "device-block": [("blk", "sda-copy", None)],
    "fifo": [("fifo", "pipe", None)],
    "hardlink-absolute": [("hardlink", "hl", "/etc/hostname")],
    "hardlink-dotdot": [("hardlink", "hl", "../outside/victim.txt")],
    "hardlink-to-nothing": [("hardlink", "hl", "never-seen.txt")],
}


def crc64(data: bytes, crc: int = 0) -> int:
    """Redis's CRC-64 (Jones polynomial, reflected, initial value 0)."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x95AC9329AC4BC9B5 if crc & 1 else 0)
    return crc


def rdb_string(s: bytes) -> bytes:
    assert len(s) < 64
    return bytes([len(s)]) + s


def rdb(version: int, pairs) -> bytes:
    body = b"REDIS%04d" % version
    body += b"\xfa" + rdb_string(b"mevb-corpus") + rdb_string(b"1")  # an AUX field
    body += b"\xfe\x00" + b"\xfb" + bytes([len(pairs)]) + b"\x00"  # SELECTDB 0, RESIZEDB
    for k, v in pairs:
        body += b"\x00" + rdb_string(k) + rdb_string(v)  # a string key
    body += b"\xff"
    return body + crc64(body).to_bytes(8, "little")


PAIRS = [(b"corpus:key:%d" % i, b"value number %d of the corpus" % i) for i in range(3)]


def rdbs():
    good = rdb(9, PAIRS)
    flipped = bytearray(good)
    flipped[good.index(b"value number 1") + 3] ^= 0x01  # same size, CRC no longer matches
    return {
        "good": good,
        "truncated": good[: good.index(b"value number 1") + 5],
        "bitflip": bytes(flipped),
        "garbage": b"REDIS0009" + bytes(range(256)) * 2,
        "newer-v12": rdb(12, PAIRS),
    }


def main(out: Path) -> None:
    (out / "tar").mkdir(parents=True, exist_ok=True)
    (out / "rdb").mkdir(parents=True, exist_ok=True)
    for name, members in TARS.items():
        (out / "tar" / f"{name}.tar").write_bytes(tar_bytes(*members))
    for name, data in rdbs().items():
        (out / "rdb" / f"{name}.rdb").write_bytes(data)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
