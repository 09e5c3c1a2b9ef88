#!/usr/bin/env python3
"""Steady random-write workload for bench/replication.

  write_load.py --file F --size BYTES --rate BYTES_PER_S --seconds S [--seed N]

Creates F (BYTES, written once with random data and fsynced), then writes random 4 KiB blocks at random
4 KiB-aligned offsets at RATE bytes per second for S seconds, in 10 ms slices, with fdatasync every 100 ms,
and prints the number of blocks written.
"""

import argparse
import os
import random
import time

BLOCK = 4096


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--file", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--rate", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--prepare-only", action="store_true")
    a = p.parse_args()
    rng = random.Random(a.seed)
    blocks = a.size // BLOCK
    if not os.path.exists(a.file) or os.path.getsize(a.file) != a.size:
        with open(a.file, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(a.size >> 20):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    if a.prepare_only:
        return
    fd = os.open(a.file, os.O_WRONLY)
    per_slice = a.rate / 100.0 / BLOCK  # blocks per 10 ms
    written = 0
    owed = 0.0
    start = time.monotonic()
    next_sync = start + 0.1
    while True:
        now = time.monotonic()
        if now - start >= a.seconds:
            break
        owed += per_slice
        while owed >= 1:
            os.pwrite(fd, rng.randbytes(BLOCK), rng.randrange(blocks) * BLOCK)
            written += 1
            owed -= 1
        if now >= next_sync:
            os.fdatasync(fd)
            next_sync += 0.1
        slice_end = start + (int((now - start) * 100) + 1) / 100.0
        delay = slice_end - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    os.fdatasync(fd)
    os.close(fd)
    print(written)


if __name__ == "__main__":
    main()
