#!/usr/bin/env python3
"""Deterministic test data for bench/store.

  gen_image.py image  --seed N --size BYTES --out FILE
      A disk image made of 64 KiB runs (aligned at 64 KiB): 30% zero (left as holes), 40% text-like
      (a log stream: RFC 3339 timestamp, level, service, pseudo-words from a seeded vocabulary, numbers;
      never repeats, compresses roughly 3-4x with zstd), 30% random. The same seed gives the same bytes.

  gen_image.py mutate --seed N --file FILE [--writes 5000]
      Overwrites FILE in place with WRITES random 4 KiB blocks of random data at random 4 KiB-aligned
      offsets (deterministic from the seed and the file size). Run it on a copy of the image.

Everything is vectorized with numpy: the text is built by gathering from one byte table (vocabulary,
rendered timestamps and numbers) with index arrays, so 2 GiB take well under a minute.
"""

import argparse
import os
import sys
import time

import numpy as np

RUN = 64 << 10
BLOCK = 4 << 10
BATCH_RUNS = 256  # runs generated and written per batch (16 MiB)

LEVELS = [b"INFO ", b"DEBUG ", b"WARN ", b"ERROR ", b"TRACE "]
LEVEL_P = [0.62, 0.2, 0.1, 0.05, 0.03]
KEYS = [b"id=", b"user=", b"latency_ms=", b"bytes=", b"status=", b"port=", b"retry=", b"offset=",
        b"conn=", b"rows=", b"seq=", b"txn=", b"shard=", b"pid=", b"size=", b"count="]


class TextStream:
    """An endless, non-repeating log stream, produced in byte batches."""

    MAX_WORDS = 14

    def __init__(self, rng):
        self.rng = rng
        # Vocabulary: a few thousand pseudo-words from a syllable-ish alphabet, Zipf-like frequencies.
        nwords = 4096
        letters = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
        lp = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0,
                       2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07])
        lp /= lp.sum()
        wlen = rng.integers(2, 11, nwords)
        words = []
        for n in wlen:
            words.append(bytes(rng.choice(letters, n, p=lp)) + b" ")
        ranks = np.arange(1, nwords + 1, dtype=np.float64)
        wp = 1.0 / ranks ** 1.0
        # 65536-entry lookup tables turn 16 random bits into a word (or level) with the wanted frequencies.
        q = (np.arange(1 << 16) + 0.5) / (1 << 16)
        self.word_table = np.minimum(np.searchsorted(np.cumsum(wp / wp.sum()), q), nwords - 1)
        self.digits3 = np.array([list(b"%03d" % i) for i in range(1000)], dtype=np.uint8)
        # Services: name[pid]: with pids fixed per service.
        services = []
        for i in range(48):
            a = words[int(rng.integers(0, 300))].strip()
            b = words[int(rng.integers(0, 300))].strip()
            services.append(b"%s-%s[%d]: " % (a, b, int(rng.integers(100, 65000))))
        # Static table: words, levels, services, keys, newline.
        static = words + LEVELS + services + KEYS + [b"\n"]
        self.static = np.frombuffer(b"".join(static), dtype=np.uint8)
        lens = np.array([len(s) for s in static], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        o = 0
        self.w_start, self.w_len = starts[o:o + nwords], lens[o:o + nwords]
        o += nwords
        self.l_start, self.l_len = starts[o:o + len(LEVELS)], lens[o:o + len(LEVELS)]
        self.level_table = np.minimum(np.searchsorted(np.cumsum(LEVEL_P), q), len(LEVELS) - 1)
        o += len(LEVELS)
        self.s_start, self.s_len = starts[o:o + len(services)], lens[o:o + len(services)]
        o += len(services)
        self.k_start, self.k_len = starts[o:o + len(KEYS)], lens[o:o + len(KEYS)]
        o += len(KEYS)
        self.nl_start = starts[o]
        # Time: microseconds since the epoch, advancing per line.
        self.t_us = np.int64(1_735_689_600_000_000) + np.int64(rng.integers(0, 10**12))
        self.pending = np.empty(0, dtype=np.uint8)

    @staticmethod
    def _timestamps(us):
        """RFC 3339 timestamps with microseconds, 28 bytes each ('YYYY-MM-DDThh:mm:ss.ffffffZ ')."""
        days, rem = np.divmod(us, 86_400_000_000)
        # Civil date from days since 1970-01-01 (proleptic Gregorian).
        z = days + 719468
        era = np.floor_divide(z, 146097)
        doe = z - era * 146097
        yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
        y = yoe + era * 400
        doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
        mp = (5 * doy + 2) // 153
        d = doy - (153 * mp + 2) // 5 + 1
        m = np.where(mp < 10, mp + 3, mp - 9)
        y = y + (m <= 2)
        sec, frac = np.divmod(rem, 1_000_000)
        hh, sec = np.divmod(sec, 3600)
        mm, ss = np.divmod(sec, 60)
        out = np.empty((len(us), 28), dtype=np.uint8)

        def put(col, val, width):
            for k in range(width):
                out[:, col + width - 1 - k] = 48 + (val // 10**k) % 10

        put(0, y, 4)
        out[:, 4] = ord("-")
        put(5, m, 2)
        out[:, 7] = ord("-")
        put(8, d, 2)
        out[:, 10] = ord("T")
        put(11, hh, 2)
        out[:, 13] = ord(":")
        put(14, mm, 2)
        out[:, 16] = ord(":")
        put(17, ss, 2)
        out[:, 19] = ord(".")
        put(20, frac, 6)
        out[:, 26] = ord("Z")
        out[:, 27] = ord(" ")
        return out

    def _lines(self, nlines):
        rng = self.rng
        mw = self.MAX_WORDS
        # Timestamps: strictly increasing by 1 us .. 20 ms.
        steps = rng.integers(1, 20_000, nlines, dtype=np.int64)
        us = self.t_us + np.cumsum(steps)
        self.t_us = us[-1]
        ts = self._timestamps(us)
        # Per word slot, one 32-bit draw: low 16 bits pick the word (Zipf table), the next 8 whether the
        # slot is a key=number pair (18%), the top 4 the key.
        r = rng.integers(0, 1 << 32, (nlines, mw), dtype=np.uint32)
        nwords = rng.integers(4, mw + 1, nlines)
        used = np.arange(mw)[None, :] < nwords[:, None]
        wi = self.word_table[r & 0xFFFF]
        isnum = ((r >> 16) & 0xFF) < 46
        numpos = isnum & used
        ki = (r >> 28).astype(np.int64)
        # Numbers: log-uniform values of 1..9 digits, rendered right-aligned in 10-byte slots ('digits ').
        nnum = int(numpos.sum())
        ndig = rng.integers(1, 10, nnum)
        lo = 10 ** (ndig - 1)
        val = lo + (rng.random(nnum) * (9 * lo)).astype(np.int64)
        num = np.empty((nnum, 10), dtype=np.uint8)
        for k in range(0, 9, 3):
            num[:, 6 - k:9 - k] = self.digits3[(val // 10**k) % 1000]
        num[:, 9] = ord(" ")
        # Source table: static | timestamps | numbers.
        ts_base = len(self.static)
        num_base = ts_base + ts.size
        src = np.concatenate([self.static, ts.ravel(), num.ravel()])
        # Token grid per line: ts, level, service, then per word slot (key, value), newline.
        # Plain words leave the key empty; unused slots are empty.
        ncol = 3 + 2 * mw + 1
        start = np.zeros((nlines, ncol), dtype=np.int64)
        length = np.zeros((nlines, ncol), dtype=np.int64)
        start[:, 0] = ts_base + np.arange(nlines) * 28
        length[:, 0] = 28
        pick = rng.integers(0, 1 << 16, (2, nlines), dtype=np.uint16)
        lv = self.level_table[pick[0]]
        start[:, 1], length[:, 1] = self.l_start[lv], self.l_len[lv]
        sv = pick[1] % len(self.s_start)
        start[:, 2], length[:, 2] = self.s_start[sv], self.s_len[sv]
        vs = self.w_start[wi]
        vl = np.where(used, self.w_len[wi], 0)
        vs[numpos] = num_base + np.arange(nnum) * 10 + (9 - ndig)
        vl[numpos] = ndig + 1
        start[:, 3:3 + 2 * mw:2] = np.where(numpos, self.k_start[ki], 0)
        length[:, 3:3 + 2 * mw:2] = np.where(numpos, self.k_len[ki], 0)
        start[:, 4:4 + 2 * mw:2], length[:, 4:4 + 2 * mw:2] = vs, vl
        start[:, -1], length[:, -1] = self.nl_start, 1
        s = start.ravel()
        l = length.ravel()
        total = int(l.sum())
        off = np.cumsum(l) - l
        idx = np.repeat(s - off, l) + np.arange(total, dtype=np.int64)
        return src[idx]

    def take(self, n):
        parts = [self.pending]
        have = len(self.pending)
        while have < n:
            lines = max(1024, (n - have) // 90 + 64)
            b = self._lines(lines)
            parts.append(b)
            have += len(b)
        buf = np.concatenate(parts)
        self.pending = buf[n:].copy()
        return buf[:n]


def run_kinds(nruns, rng):
    """Exactly 30% zero (0), 40% text (1), 30% random (2), shuffled."""
    nzero = int(round(nruns * 0.3))
    ntext = int(round(nruns * 0.4))
    kinds = np.full(nruns, 2, dtype=np.int8)
    kinds[:nzero] = 0
    kinds[nzero:nzero + ntext] = 1
    rng.shuffle(kinds)
    return kinds


def make_image(seed, size, out):
    if size % RUN:
        sys.exit("gen_image: size must be a multiple of 64 KiB")
    t0 = time.time()
    root = np.random.SeedSequence([seed, 0x11FEB0A7])
    s_kinds, s_text, s_rand = root.spawn(3)
    nruns = size // RUN
    kinds = run_kinds(nruns, np.random.default_rng(s_kinds))
    text = TextStream(np.random.default_rng(s_text))
    rnd = np.random.default_rng(s_rand)
    tmp = out + ".partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for b0 in range(0, nruns, BATCH_RUNS):
            k = kinds[b0:b0 + BATCH_RUNS]
            buf = np.zeros((len(k), RUN), dtype=np.uint8)
            ti = np.nonzero(k == 1)[0]
            ri = np.nonzero(k == 2)[0]
            if len(ti):
                buf[ti] = text.take(len(ti) * RUN).reshape(len(ti), RUN)
            if len(ri):
                buf[ri] = np.frombuffer(rnd.bytes(len(ri) * RUN), dtype=np.uint8).reshape(len(ri), RUN)
            # Write maximal stretches of non-zero runs; zero runs stay holes.
            i = 0
            while i < len(k):
                if k[i] == 0:
                    i += 1
                    continue
                j = i
                while j < len(k) and k[j] != 0:
                    j += 1
                data = memoryview(buf[i:j]).cast("B")
                pos, done = (b0 + i) * RUN, 0
                while done < len(data):
                    done += os.pwrite(fd, data[done:], pos + done)
                i = j
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, out)
    counts = np.bincount(kinds, minlength=3)
    print(
        f"gen_image: {out}: {size} bytes, {nruns} runs of 64 KiB: {counts[0]} zero, {counts[1]} text, "
        f"{counts[2]} random ({time.time() - t0:.1f} s)"
    )


def mutate(seed, path, writes):
    t0 = time.time()
    size = os.path.getsize(path)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED, writes]))
    nblocks = size // BLOCK
    offs = rng.integers(0, nblocks, writes, dtype=np.int64) * BLOCK
    data = np.frombuffer(rng.bytes(writes * BLOCK), dtype=np.uint8).reshape(writes, BLOCK)
    fd = os.open(path, os.O_WRONLY)
    try:
        for i in range(writes):
            os.pwrite(fd, data[i].tobytes(), int(offs[i]))
        os.fsync(fd)
    finally:
        os.close(fd)
    distinct = len(np.unique(offs))
    print(
        f"gen_image: mutated {path}: {writes} writes of 4 KiB ({writes * BLOCK} bytes, {distinct} distinct "
        f"blocks) ({time.time() - t0:.1f} s)"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("image")
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--size", type=int, default=2 << 30)
    a.add_argument("--out", required=True)
    m = sub.add_parser("mutate")
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--file", required=True)
    m.add_argument("--writes", type=int, default=5000)
    args = p.parse_args()
    if args.cmd == "image":
        make_image(args.seed, args.size, args.out)
    else:
        mutate(args.seed, args.file, args.writes)


if __name__ == "__main__":
    main()
