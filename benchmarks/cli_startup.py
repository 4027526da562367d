"""How long `genqa --help` and every `genqa SUB --help` take, wall clock, in fresh processes (target: < 2 s).

Prints one JSON line per command (best and median of `--repeats` runs) and a last line with the slowest best time.
Heavy libraries (torch, transformers, TRL, datasets) must not load before the arguments are parsed.

    .venv/bin/python benchmarks/cli_startup.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [[], ["train"], ["preview"], ["merge"], ["predict"], ["eval"], ["env"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    slowest = 0.0
    for sub in COMMANDS:
        cmd = [sys.executable, "-m", "genqa", *sub, "--help"]
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        slowest = max(slowest, min(times))
        print(json.dumps({"command": " ".join(["genqa", *sub, "--help"]), "best_s": round(min(times), 3),
                          "median_s": round(statistics.median(times), 3)}))
    print(json.dumps({"slowest_best_s": round(slowest, 3), "target_s": 2.0, "met": slowest < 2.0,
                      "load_average": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
