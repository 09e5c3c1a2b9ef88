#!/usr/bin/env python3
"""A write workload whose every crash-consistent state can be checked exactly (the consistency proof).

    sqlite-workload.py run   DIR LOG [--seconds S] [--steps N]
    sqlite-workload.py check DIR [--log LOG] [--capture-ns T]

`run` works in DIR (a mounted filesystem) until SIGTERM/SIGINT, --seconds or --steps, in numbered steps
n = 1, 2, 3, ...; each step, in this order:

  1. churn: overwrites CHURN_WRITES 4 KiB blocks of churn.bin (no fsync), chosen and filled
     deterministically from n, each block saying which step wrote it;
  2. file: writes files/f-n.tmp (header with length and SHA-256 of a random body), fsyncs it, renames it to
     files/f-n.dat, fsyncs the directory;
  3. append: appends the line "n <sha256 of n>" to append.log, fsyncs it;
  4. commits row id n in wal.db (journal_mode=WAL, synchronous=FULL), one transaction;
  5. commits row id n in delete.db (journal_mode=DELETE, synchronous=FULL), one transaction;
  6. unlinks files/f-(n-KEEP).dat;
  7. appends "n start_ns done_ns" to LOG (outside DIR; CLOCK_REALTIME, the clock of the agent's capture time).
On exit LOG gets "done N" (N = the last finished step).

`check` verifies DIR as a crash of `run` would have left it (DIR may be read-only: the databases are copied
with their journals to a temporary directory and opened there, which recovers them as SQLite would), and
prints one JSON object: {"ok", "errors", "wal", "delete", "appended", "files", "churn_step", ...}. With N the
rows in wal.db, it requires: both databases pass PRAGMA integrity_check and hold exactly ids 1..their count;
delete.db holds N or N-1 rows; append.log holds the lines 1..N or 1..N+1, each intact; files/f-k.dat exist
and are intact for every k in N-KEEP+1..N, and no other file exists but f-(N-KEEP).dat, f-(N+1).dat and
f-(N+1).tmp (which may be partial); churn.bin is block for block the state after step N, except blocks step
N+1 writes, which may hold that step's content. With --log and --capture-ns it also bounds N by the log:
every step whose done_ns < T is included, no step whose start_ns > T is. Exit status 0 when ok, 1 otherwise.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import sys
import tempfile
import time

CHURN_BLOCKS = 1024  # churn.bin is 4 MiB
CHURN_WRITES = 8  # blocks overwritten per step
BLOCK = 4096
KEEP = 64  # files kept in files/
MAX_BODY = 48 << 10
CHURN_MAGIC = b"LBCHURN1"
FILE_MAGIC = b"LBFILE1 "


def churn_targets(step):
    rng = random.Random(step * 7919 + 17)
    return [rng.randrange(CHURN_BLOCKS) for _ in range(CHURN_WRITES)]


def churn_block(step, index):
    header = CHURN_MAGIC + struct.pack("<QQ", step, index)
    seed = hashlib.sha256(b"%d:%d" % (step, index)).digest()
    body = (seed * (BLOCK // len(seed)))[: BLOCK - len(header)]
    return header + body


def line_for(n):
    return b"%d %s\n" % (n, hashlib.sha256(b"line %d" % n).hexdigest().encode())


def open_db(path, mode):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=%s" % mode)
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, payload TEXT NOT NULL, digest TEXT NOT NULL)")
    return db


def payload_for(n):
    text = ("row %d " % n) * (1 + n % 40)
    return text, hashlib.sha256(text.encode()).hexdigest()


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run(args):
    stop = [False]

    def on_signal(signum, frame):
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # A parent may start us with these blocked (Foundation's Process on Linux does): unblock them.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    d = args.dir
    files = os.path.join(d, "files")
    os.makedirs(files, exist_ok=True)
    fsync_dir(d)
    churn_path = os.path.join(d, "churn.bin")
    with open(churn_path, "wb") as f:
        f.truncate(CHURN_BLOCKS * BLOCK)
        os.fsync(f.fileno())
    fsync_dir(d)
    churn = os.open(churn_path, os.O_WRONLY)
    append = os.open(os.path.join(d, "append.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    wal = open_db(os.path.join(d, "wal.db"), "WAL")
    delete = open_db(os.path.join(d, "delete.db"), "DELETE")
    fsync_dir(d)
    log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    os.write(log, b"started %d\n" % os.getpid())

    n = 0
    while not stop[0] and (deadline is None or time.monotonic() < deadline) and (not args.steps or n < args.steps):
        step = n + 1
        start = time.time_ns()
        for index in churn_targets(step):
            os.pwrite(churn, churn_block(step, index), index * BLOCK)

        body = os.urandom(random.randrange(1, MAX_BODY))
        tmp = os.path.join(files, "f-%d.tmp" % step)
        with open(tmp, "wb") as f:
            f.write(FILE_MAGIC + b"%d %d %s\n" % (step, len(body), hashlib.sha256(body).hexdigest().encode()))
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(files, "f-%d.dat" % step))
        fsync_dir(files)

        os.write(append, line_for(step))
        os.fsync(append)

        text, digest = payload_for(step)
        for db in (wal, delete):
            db.execute("BEGIN")
            db.execute("INSERT INTO t (id, payload, digest) VALUES (?, ?, ?)", (step, text, digest))
            db.execute("COMMIT")

        if step > KEEP:
            os.unlink(os.path.join(files, "f-%d.dat" % (step - KEEP)))
        n = step
        os.write(log, b"%d %d %d\n" % (n, start, time.time_ns()))

    wal.close()
    delete.close()
    os.close(append)
    os.close(churn)
    os.write(log, b"done %d\n" % n)
    os.close(log)
    print("done %d" % n)


def check_db(snapshot, name, scratch, errors):
    """Copies name, name-wal and name-journal, opens the copy (recovering it) and returns its row count."""
    present = [s for s in ("", "-wal", "-journal") if os.path.exists(os.path.join(snapshot, name + s))]
    if "" not in present:
        errors.append("%s is missing" % name)
        return None
    for s in present:
        shutil.copyfile(os.path.join(snapshot, name + s), os.path.join(scratch, name + s))
    try:
        db = sqlite3.connect(os.path.join(scratch, name), isolation_level=None)
        try:
            result = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
            if result != ["ok"]:
                errors.append("%s: integrity_check: %s" % (name, "; ".join(map(str, result[:5]))))
            ids = [r[0] for r in db.execute("SELECT id FROM t ORDER BY id")]
            count = len(ids)
            if ids != list(range(1, count + 1)):
                missing = sorted(set(range(1, (ids[-1] if ids else 0) + 1)) - set(ids))
                errors.append("%s: ids are not 1..%d: %d ids, max %s, missing %s" % (
                    name, count, count, ids[-1] if ids else None, missing[:10]))
            bad = 0
            for rid, text, digest in db.execute("SELECT id, payload, digest FROM t"):
                if payload_for(rid) != (text, digest):
                    bad += 1
            if bad:
                errors.append("%s: %d rows with wrong content" % (name, bad))
        finally:
            db.close()
    except sqlite3.Error as e:
        errors.append("%s: %s" % (name, e))
        return None
    return {"rows": count, "files": ["%s%s" % (name, s) for s in present]}


def check(args):
    d = args.dir
    errors = []
    result = {}
    scratch = tempfile.mkdtemp(prefix="workload-check-")
    try:
        wal = check_db(d, "wal.db", scratch, errors)
        delete = check_db(d, "delete.db", scratch, errors)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    n = wal["rows"] if wal else 0
    result["wal"] = wal["rows"] if wal else None
    result["delete"] = delete["rows"] if delete else None
    result["db_files"] = (wal["files"] if wal else []) + (delete["files"] if delete else [])
    if wal and delete and delete["rows"] not in (n, n - 1):
        errors.append("delete.db holds %d rows, wal.db %d: the step order says %d or %d" % (delete["rows"], n, n, n - 1))

    # append.log: intact lines 1..L, L = N or N + 1.
    try:
        with open(os.path.join(d, "append.log"), "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            errors.append("append.log ends in an incomplete line of %d bytes" % len(tail))
        appended = 0
        for i, raw in enumerate(lines, start=1):
            if raw + b"\n" != line_for(i):
                errors.append("append.log line %d is %r" % (i, raw[:80]))
                break
            appended = i
        result["appended"] = appended
        if appended not in (n, n + 1):
            errors.append("append.log holds %d lines, wal.db %d rows: expected %d or %d" % (appended, n, n, n + 1))
    except OSError as e:
        errors.append("append.log: %s" % e)

    # files/: every f-k.dat intact; exactly the expected ones.
    try:
        names = sorted(os.listdir(os.path.join(d, "files")))
    except OSError as e:
        names = []
        errors.append("files/: %s" % e)
    must = set(range(max(1, n - KEEP + 1), n + 1))
    may = {n - KEEP, n + 1}
    found = set()
    for name in names:
        path = os.path.join(d, "files", name)
        if name == "f-%d.tmp" % (n + 1):
            continue  # the next step's file, possibly partial
        if not (name.startswith("f-") and name.endswith(".dat") and name[2:-4].isdigit()):
            errors.append("unexpected file files/%s" % name)
            continue
        k = int(name[2:-4])
        if k not in must and k not in may:
            errors.append("files/%s should not exist with %d rows committed" % (name, n))
        found.add(k)
        with open(path, "rb") as f:
            data = f.read()
        header, _, body = data.partition(b"\n")
        parts = header[len(FILE_MAGIC):].split(b" ")
        if not header.startswith(FILE_MAGIC) or len(parts) != 3 or parts[0] != b"%d" % k \
                or int(parts[1]) != len(body) or hashlib.sha256(body).hexdigest().encode() != parts[2]:
            errors.append("files/%s is damaged (%d bytes, header %r)" % (name, len(data), header[:80]))
    missing = sorted(must - found)
    if missing:
        errors.append("files missing: %s" % ", ".join("f-%d.dat" % k for k in missing[:10]))
    result["files"] = len(found)

    # churn.bin: the state after step n, blocks of step n + 1 allowed.
    try:
        with open(os.path.join(d, "churn.bin"), "rb") as f:
            churn = f.read()
        if len(churn) != CHURN_BLOCKS * BLOCK:
            errors.append("churn.bin is %d bytes, not %d" % (len(churn), CHURN_BLOCKS * BLOCK))
        expected = [0] * CHURN_BLOCKS
        for step in range(1, n + 1):
            for index in churn_targets(step):
                expected[index] = step
        following = set(churn_targets(n + 1))
        bad = []
        newest = 0
        for index in range(min(CHURN_BLOCKS, len(churn) // BLOCK)):
            block = churn[index * BLOCK:(index + 1) * BLOCK]
            want = expected[index]
            ok = block == (churn_block(want, index) if want else bytes(BLOCK))
            if not ok and index in following and block == churn_block(n + 1, index):
                ok = True
            if not ok:
                got = struct.unpack("<QQ", block[8:24]) if block.startswith(CHURN_MAGIC) else None
                bad.append("block %d: want step %d, got %s" % (index, want, "step %d" % got[0] if got else "other bytes"))
            elif block.startswith(CHURN_MAGIC):
                newest = max(newest, struct.unpack("<Q", block[8:16])[0])
        if bad:
            errors.append("churn.bin differs from the state after step %d in %d blocks: %s" % (n, len(bad), "; ".join(bad[:5])))
        result["churn_step"] = newest
    except OSError as e:
        errors.append("churn.bin: %s" % e)

    # The log bounds N by the capture instant.
    if args.log and args.capture_ns:
        done_before = 0
        started_after = None
        with open(args.log) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 3:
                    continue
                k, start, done = int(parts[0]), int(parts[1]), int(parts[2])
                if done < args.capture_ns:
                    done_before = max(done_before, k)
                if start > args.capture_ns and started_after is None:
                    started_after = k
        result["done_before_capture"] = done_before
        result["started_after_capture"] = started_after
        if n < done_before:
            errors.append("wal.db holds %d rows, but step %d had committed before the capture time" % (n, done_before))
        if started_after is not None and n >= started_after:
            errors.append("wal.db holds %d rows, but step %d started after the capture time" % (n, started_after))

    result["errors"] = errors
    result["ok"] = not errors
    print(json.dumps(result))
    return 0 if not errors else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("log")
    r.add_argument("--seconds", type=float, default=0)
    r.add_argument("--steps", type=int, default=0)
    c = sub.add_parser("check")
    c.add_argument("dir")
    c.add_argument("--log")
    c.add_argument("--capture-ns", type=int)
    args = parser.parse_args()
    if args.command == "run":
        run(args)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
