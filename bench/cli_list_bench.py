"""Start-up of ``invoke --list`` for our collection, against an empty collection.

Both run as fresh processes (what a user waits for), alternating, N times each; medians.

    python bench/cli_list_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INVOKE = Path(sys.executable).parent / "invoke"


def timed(cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(INVOKE), "--list"], cwd=cwd, check=True, capture_output=True)
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
        ours, base = [], []
        timed(ROOT), timed(empty)  # warm the page cache
        for _ in range(args.runs):
            ours.append(timed(ROOT))
            base.append(timed(empty))
    ours_med, base_med = statistics.median(ours), statistics.median(base)
    print(f"runs: {args.runs} each, alternating (medians)")
    print(f"invoke --list, runbook-bot : {ours_med:.3f} s  (goal <= 0.35 s)")
    print(f"invoke --list, empty       : {base_med:.3f} s")
    print(f"ratio                      : {ours_med / base_med:.2f}x  (goal <= 2.5x)")


if __name__ == "__main__":
    main()
