"""Backups and restore tests: throughput against a plain driver loop, and memory.

1. Restore throughput. One dump of N documents (~1 KB each) in the backup bucket. The
   baseline decodes the same BSON from a local file and inserts it with a plain pymongo
   ``insert_many`` loop (batches of 1000) into a new database on the same server. Ours is
   ``restore.test``'s load phase (``runbooks.kit.backups.restore_into`` through the real
   adapters: S3 download, gunzip, raw BSON, ``insert_many`` of raw documents), and then the
   whole restore test (index build and verification included). Runs alternate; medians.
2. Peak memory of ``restore.backup`` over M documents of 1 KB: a child process connects,
   notes its resident set, dumps through the real adapters (cursor → gzip → multipart upload)
   and reports its peak resident set (VmHWM) above that start.

The MongoDB wire server and moto each run in their own process, as in the sandbox.

    python bench/restore_bench.py [--documents N] [--memory-documents M] [--runs R]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bson  # noqa: E402
import pymongo  # noqa: E402

SERVER = """
import sys, time, random, string, bson, datetime
from sandbox.mongo import MongoServer
server = MongoServer(name="bench").start()
n = int(sys.argv[1])
rng = random.Random(7)
filler = "".join(rng.choice(string.ascii_letters) for _ in range(4096))
docs = []
for i in range(n):
    start = rng.randrange(0, 3000)
    at = datetime.datetime(2026, 11, 1) + datetime.timedelta(seconds=i)
    docs.append({"_id": i, "k": i % 97, "at": at, "text": filler[start:start + 900],
                 "tags": ["a", "b", "c"]})
    if len(docs) == 10000:
        server.client.app.big.insert_many(docs); docs = []
if docs:
    server.client.app.big.insert_many(docs)
server.client.app.big.create_index("k")
print(server.uri, flush=True)
time.sleep(1e9)
"""

MOTO = """
import time
from sandbox.aws import AwsSandbox
aws = AwsSandbox().start().seed()
print(aws.url, flush=True)
time.sleep(1e9)
"""

DUMP_CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from runbooks.adapters.aws import AwsAdapter
from runbooks.adapters.mongo_data import MongoData
from runbooks.kit import backups

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
data = MongoData("BENCH_MONGODB_URI", timeout=60, label="bench")
aws = AwsAdapter("us-east-1", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
data.collection_names("app"); aws.objects("app-backups", "nothing/")
start = rss("VmRSS")
t = time.perf_counter()
manifest = backups.dump(data, aws, bucket="app-backups", prefix=sys.argv[2], database="app",
                        environment="bench", timestamp_field="at", clock_now=time.time)
elapsed = time.perf_counter() - t
print(json.dumps({"start": start, "peak": rss("VmHWM"), "seconds": elapsed,
                  "documents": manifest["collections"]["big"]["count"],
                  "bytes": manifest["collections"]["big"]["bytes"]}))
"""


def spawn(code: str, *args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        raise SystemExit(f"a helper process did not start: {code[:60]!r}")
    return proc, line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=30_000)
    parser.add_argument("--memory-documents", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from sandbox.aws import CREDENTIALS

    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(ROOT)}
    moto, aws_url = spawn(MOTO, env=env)
    env["AWS_ENDPOINT_URL"] = aws_url
    os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": aws_url})
    helpers = [moto]
    try:
        throughput(args.documents, args.runs, env, helpers)
        memory(args.memory_documents, env, helpers)
    finally:
        for helper in helpers:
            helper.kill()


def throughput(n: int, runs: int, env: dict[str, str], helpers: list[Any]) -> None:
    from runbooks.adapters.aws import AwsAdapter
    from runbooks.adapters.mongo_data import MongoData
    from runbooks.kit import backups

    started = time.perf_counter()
    server, uri = spawn(SERVER, str(n), env=env)
    helpers.append(server)
    print(f"server seeded with {n} documents in {time.perf_counter() - started:.1f}s")
    os.environ["BENCH_MONGODB_URI"] = uri
    data = MongoData("BENCH_MONGODB_URI", timeout=120, label="bench")
    aws = AwsAdapter("us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"])
    backups.dump(
        data,
        aws,
        bucket="app-backups",
        prefix="bench/throughput",
        database="app",
        environment="bench",
        timestamp_field="at",
        clock_now=time.time,
    )
    body = aws.read_object("app-backups", "bench/throughput/app/big.bson.gz").read()
    raw = gzip.decompress(body)
    [backup] = [
        b for b in backups.find_backups(aws, "app-backups") if b.prefix == "bench/throughput"
    ]
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri)
    base_times, ours_times, full_times = [], [], []
    for run in range(runs):
        started = time.perf_counter()
        batch = []
        for document in bson.decode_file_iter(io.BytesIO(raw)):
            batch.append(document)
            if len(batch) == 1000:
                client[f"base_{run}"].big.insert_many(batch)
                batch = []
        if batch:
            client[f"base_{run}"].big.insert_many(batch)
        base_times.append(time.perf_counter() - started)
        client.drop_database(f"base_{run}")

        report = backups.restore_into(aws, data, backup, f"ours_{run}")
        ours_times.append(report.phases.download + report.phases.restore)
        full_times.append(report.phases.total)
        assert report.passed, report.summary()
        data.drop_database(f"ours_{run}")
    base, ours, full = (statistics.median(t) for t in (base_times, ours_times, full_times))
    print(
        json.dumps(
            {
                "documents": n,
                "baseline_s": round(base, 3),
                "baseline_docs_per_s": round(n / base),
                "restore_load_s": round(ours, 3),
                "restore_docs_per_s": round(n / ours),
                "ratio": round(ours / base, 2),
                "restore_test_total_s": round(full, 3),
            }
        )
    )
    server.kill()
    helpers.remove(server)


def memory(n: int, env: dict[str, str], helpers: list[Any]) -> None:
    started = time.perf_counter()
    server, uri = spawn(SERVER, str(n), env=env)
    helpers.append(server)
    print(f"server seeded with {n} documents in {time.perf_counter() - started:.1f}s")
    result = subprocess.run(
        [sys.executable, "-c", DUMP_CHILD, str(ROOT), "bench/memory"],
        env={**env, "BENCH_MONGODB_URI": uri},
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    above = (measured["peak"] - measured["start"]) / 2**20
    print(
        json.dumps(
            {
                "documents": measured["documents"],
                "dumped_mb": round(measured["bytes"] / 2**20, 1),
                "dump_s": round(measured["seconds"], 1),
                "rss_at_start_mb": round(measured["start"] / 2**20, 1),
                "peak_above_start_mb": round(above, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
