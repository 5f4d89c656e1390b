"""Start-up of ``invoke --list`` for our collection, against a one-task collection.

All run as fresh processes (what a user waits for), alternating, N times each; medians.
"warm": the task table is in the cache (every run after the first since runbooks/ last
changed); "cold": an empty cache each run (the first run after a change).

    python bench/cli_list_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INVOKE = Path(sys.executable).parent / "invoke"


def timed(cwd: Path, cache: str | None = None) -> float:
    env = {**os.environ, **({"XDG_CACHE_HOME": cache} if cache else {})}
    start = time.perf_counter()
    subprocess.run([str(INVOKE), "--list"], cwd=cwd, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp)
        (empty / "tasks.py").write_text(
            "from invoke import task\n\n\n@task\ndef noop(c):\n    pass\n"
        )
        warm_cache = str(empty / "cache")
        ours, cold, base = [], [], []
        timed(ROOT, warm_cache), timed(empty)  # warm the page cache and the task table
        for run in range(args.runs):
            ours.append(timed(ROOT, warm_cache))
            cold.append(timed(ROOT, str(empty / f"cold-{run}")))
            base.append(timed(empty))
    ours_med, cold_med, base_med = (statistics.median(x) for x in (ours, cold, base))
    print(f"runs: {args.runs} each, alternating (medians)")
    print(f"invoke --list, runbook-bot (warm) : {ours_med:.3f} s  (goal <= 0.35 s)")
    print(f"invoke --list, runbook-bot (cold) : {cold_med:.3f} s")
    print(f"invoke --list, one task           : {base_med:.3f} s")
    print(f"ratio warm                        : {ours_med / base_med:.2f}x  (goal <= 2.0x)")
    print(f"ratio cold                        : {cold_med / base_med:.2f}x")


if __name__ == "__main__":
    main()
