"""Job runners for worker-pool tests. They run inside spawned worker processes (which see no monkeypatch), so they
swap the model loader for the cheap FakeAnimator there, then run the real :func:`personalive.batch.run_one`.

Each job started is logged as ``index:pid`` in ``ran.log`` beside its output. A job whose driving video is named
``slow*`` writes its first frame, then blocks (the first time only), so a test can kill or stop the
worker while the job is in flight with a partial temporary file. A job whose reference is named ``race*`` waits,
after its first frame, until ``RACE_PARTIES`` processes have reached that point (so two runs of the same job both
get past the output-exists checks before either publishes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from media.synth import FakeAnimator

from personalive import batch, jobs

RACE_PARTIES = 2
_real_run_one = batch.run_one
_current = {}  # the job this process runs now (the animator is built once per process, like the real ones)


class _BlockingAnimator(FakeAnimator):
    def animate(self, ref_state, frames, generator):
        for i, frame in enumerate(super().animate(ref_state, frames, generator)):
            yield frame
            job = _current["job"]
            pid_file = job.out.parent / f"{job.out.name}.pid"
            if i == 0 and job.drive.name.startswith("slow") and not pid_file.exists():  # blocks once
                pid_file.write_text(str(os.getpid()))
                time.sleep(600)  # until the test kills or stops this worker
            if i == 0 and job.ref.name.startswith("race"):
                _meet(job.out.parent / f"{job.out.name}.race")


def _meet(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 300
    while len(list(folder.iterdir())) < RACE_PARTIES and time.monotonic() < deadline:
        time.sleep(0.05)


def fake_run_one(job, config, models, device, overwrite, progress):
    """batch.run_one with FakeAnimator models (loaded "once" per worker, as the real ones)."""
    jobs.load_animators = lambda c, d, t: lambda job_config: _BlockingAnimator(job_config, d, t)
    _current["job"] = job
    with open(job.out.parent / "ran.log", "a") as log:  # what ran where: one line per job started
        log.write(f"{job.index}:{os.getpid()}\n")
    return _real_run_one(job, config, models, device, overwrite, progress)


def main() -> None:
    """``python pool_helpers.py ARGS``: the ``personalive`` command line with FakeAnimator models (the race and the
    README recipe tests put a ``personalive`` script running this first on PATH)."""
    from personalive.cli import main as cli_main

    batch.run_one = fake_run_one
    cli_main()


if __name__ == "__main__":
    main()
