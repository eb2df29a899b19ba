"""Composes the stream layer from Python: the caller's bytes (a generator) -> zstd ->
storage (S3 or a local directory), then the object read back -> zstd decompression -> a
callback comparing every byte with what was sent.

    python3 compose.py URL [BYTES]        e.g. s3://backups/demo 5000000

S3 settings and credentials come from the AWS_* environment variables, never from the
command line. Exits 0 when the bytes read back are the bytes sent, 1 otherwise.
"""
from __future__ import annotations

import hashlib
import sys
from typing import Iterator, List

import mevbackup

KEY = "compose/payload-py.bin.zst"
LINE = b'{"id": %d, "state": "protected", "note": "composed by the stream layer"}\n'


def payload(total: int) -> Iterator[bytes]:
    """`total` bytes of JSON-like lines, in chunks of varying size."""
    sent, i = 0, 0
    while sent < total:
        chunk = b"".join(LINE % (i * 64 + k) for k in range(64))[: total - sent]
        sent += len(chunk)
        i += 1
        yield chunk


def main(argv: List[str]) -> int:
    if len(argv) not in (2, 3):
        print(f"usage: {argv[0]} URL [BYTES]", file=sys.stderr)
        return 2
    total = int(argv[2]) if len(argv) == 3 else 5_000_000
    sent = hashlib.sha256()
    for chunk in payload(total):
        sent.update(chunk)

    with mevbackup.Storage(argv[1]) as storage:
        storage.remove(KEY)  # a run before this one
        with mevbackup.Source.from_iterable(payload(total)) as src, \
                mevbackup.Filter.compressor("zstd", 3) as zstd, storage.put(KEY) as sink:
            mevbackup.pipeline_run(src, [zstd], sink)
        stored = storage.stat(KEY).size

        got = hashlib.sha256()
        count = [0]

        def take(chunk: bytes) -> None:
            got.update(chunk)
            count[0] += len(chunk)

        with storage.get(KEY) as src, mevbackup.Filter.decompressor("zstd") as unzstd, \
                mevbackup.Filter.observer() as seen, mevbackup.Sink.to_callback(take) as sink:
            mevbackup.pipeline_run(src, [unzstd, seen], sink)
            observed = seen.sha256

    if count[0] != total or got.hexdigest() != sent.hexdigest() or observed != sent.hexdigest():
        print(f"compose.py: MISMATCH: sent {total} bytes ({sent.hexdigest()}), got {count[0]} ({got.hexdigest()})",
              file=sys.stderr)
        return 1
    print(f"compose.py: {total} bytes -> zstd -> {KEY} ({stored} bytes stored) -> back, identical, "
          f"sha256 {observed}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
