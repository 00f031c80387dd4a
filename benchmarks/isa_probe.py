"""The AOTInductor loader's CPU-ISA question on this machine's real CPU, in fresh processes (no package needed).

    python -m benchmarks.isa_probe --out FILE.json

Asks inductor's ``pick_vec_isa`` (what ``aoti_load_package`` compares with the package's build machine) inside
the product's load context (``aoti_wrapper.loading``) and, as the control, with inductor's ``cpp.vec_isa_ok`` alone
(the fourth session's fix), each in a fresh interpreter with an empty inductor cache; records the answer, the
processes started (compiler runs, probe interpreters) and the seconds. ``tests/backends/test_aoti.py`` checks the
same with the H200 host's CPU simulated; this runs it on a real one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, subprocess, sys, time
import torch
from torch._inductor import cpu_vec_isa
from personalive.backends import aoti_wrapper
started = []
popen = subprocess.Popen.__init__
subprocess.Popen.__init__ = lambda self, args, *a, **k: started.append(str(args)[:120]) or popen(self, args, *a, **k)
if sys.argv[1] == "vec_isa_ok only":
    aoti_wrapper.SKIP_ISA_TEST_BUILDS = False
    torch._inductor.config.cpp.vec_isa_ok = True
t0 = time.perf_counter()
with aoti_wrapper.loading():
    picked = str(cpu_vec_isa.pick_vec_isa())
    valid = [str(i) for i in cpu_vec_isa.valid_vec_isa_list()]
seconds = round(time.perf_counter() - t0, 2)
print("RESULT " + json.dumps({"picked": picked, "valid": valid, "seconds": seconds, "started": started}))
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = []
    for mode in ("product", "vec_isa_ok only"):
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="ind-")}
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=env, timeout=240
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        row = json.loads(line[7:]) if line else {"stderr": proc.stderr[-1500:]}
        row |= {"mode": mode, "rc": proc.returncode, "process_s": round(time.perf_counter() - start, 1)}
        rows.append(row)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
        print(mode, {k: row.get(k) for k in ("rc", "seconds", "process_s", "picked")}, len(row.get("started", [])))


if __name__ == "__main__":
    main()
