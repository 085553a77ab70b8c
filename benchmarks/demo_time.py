"""Wall time of `cfcl demo` from an empty folder (target: <= 10 min on 2 CPU cores).

Prints one JSON line: {"benchmark": "demo_time", "seconds": ..., "stages": {...}}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run_time import stage_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="run folder (default: a temporary folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "demo"
        command = [sys.executable, "-m", "cfcl.cli", "demo", "--out", str(out)]
        for item in args.overrides:
            command += ["--set", item]
        began = time.perf_counter()
        subprocess.run(command, check=True, stdout=sys.stderr)
        seconds = time.perf_counter() - began
        print(json.dumps({"benchmark": "demo_time", "seconds": round(seconds, 1), "stages": stage_seconds(out)}))


if __name__ == "__main__":
    main()
