#!/usr/bin/env python3
"""Fills a Lifeboat catalog with many machines and recovery points, for bench/console.

    console-fixture.py CATALOG.sqlite MACHINES POINTS_PER_MACHINE

Writes straight into the tables of the catalog (schema of Sources/Catalog/Migrations.swift, v4): machines in
10 applications with one volume each, their points, replication states spread over the DRS states, every tenth
machine drilled recently. The catalog must exist (`lifeboat server init`) and no server may be running on it.
"""
import random, sqlite3, sys, time

path, machines, per_machine = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
now = time.time_ns()
states = ["CONTINUOUS"] * 14 + ["INITIAL_SYNC", "BACKLOG", "RESCAN", "STALLED", "DISCONNECTED", "PAUSED"]
db = sqlite3.connect(path)
db.execute("PRAGMA synchronous = OFF")
with db:
    for a in range(10):
        db.execute("INSERT OR IGNORE INTO applications (name, description, rpo_seconds, rto_seconds, created_at) VALUES (?, ?, ?, ?, ?)",
                   (f"app-{a}", f"application {a}", 60, 900, now))
    for i in range(machines):
        name = f"m-{i:04d}"
        state = random.choice(states)
        last_capture = now - random.randint(1, 30) * 1_000_000_000
        lifecycle = "TESTED_RECENTLY" if i % 10 == 0 else "NOT_TESTED"
        drilled = now - random.randint(1, 20) * 86_400_000_000_000 if i % 10 == 0 else None
        db.execute(
            """INSERT INTO machines (name, certificate_serial, certificate_expires, enrolled_at, connected, state, state_reason,
               backlog_bytes, synced_bytes, total_bytes, last_point, last_sequence, last_point_capture_time,
               last_consistent_capture_time, application, dr_lifecycle, last_drill_at, last_drill_passed_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (name, f"{i:032x}", now + 365 * 86_400_000_000_000, now - 40 * 86_400_000_000_000, 1 if state != "DISCONNECTED" else 0,
             state, "the network to the recovery site is down" if state == "STALLED" else None,
             random.randint(0, 1 << 30) if state == "BACKLOG" else 0, 20 << 30, 20 << 30, per_machine, per_machine,
             last_capture, last_capture, f"app-{i % 10}", lifecycle, drilled, drilled))
        db.execute("INSERT INTO machine_volumes (machine, name, size) VALUES (?, 'root', ?)", (name, 20 << 30))
        db.executemany(
            "INSERT INTO points (machine, point, sequence, capture_time, committed_at, consistent, changed_bytes) VALUES (?, ?, ?, ?, ?, 1, ?)",
            ((name, p + 1, p + 1, last_capture - (per_machine - p) * 5_000_000_000, last_capture - (per_machine - p) * 5_000_000_000 + 200_000_000,
              random.randint(4096, 1 << 24)) for p in range(per_machine)))
db.close()
