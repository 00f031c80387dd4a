"""``personalive batch --devices``: one spawned worker process per device, jobs handed out one at a time.

* Each worker is a ``spawn``-ed process (its own CUDA context, no state forked from the parent) that sees only its
  GPU (``CUDA_VISIBLE_DEVICES``) and loads the models once, on its first job.
* The parent hands out jobs one at a time as workers finish, so a long job does not leave other devices idle (the
  fixed ``--shard`` split would). A free worker gets the next job with the reference it fused last, if any, so
  the fused reference is reused as in a one-process batch.
* Each worker has its own pipe rather than a shared ``multiprocessing.Queue``: a process killed while holding a
  shared queue's lock can leave the queue unusable for every other worker; a killed worker only closes its pipe.
* A worker that dies (``kill -9``, the out-of-memory killer, a crash in native code) has its job reported failed
  with the reason, its partial temporary file is removed (the sink names it after the writer's pid) and a fresh
  worker takes its place, unless that device's workers died :data:`MAX_DEATHS_IN_A_ROW` times without finishing
  a job (the device is then left out). A worker whose job hit a CUDA error exits after reporting it (such errors
  leave a CUDA context unusable) and is replaced the same way.
* Ctrl-C, SIGTERM or an error that stops the batch: every worker is stopped (SIGTERM, then SIGKILL after
  :data:`STOP_SECONDS`); jobs in flight are cleaned up by their sinks, so no partial output is left.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from personalive import jobs
from personalive.config import RunConfig
from personalive.errors import ConfigError, DeviceError, PersonaLiveError
from personalive.job_report import failed_entry, published_entry
from personalive.manifest import Job
from personalive.media.outputs import remove_stale_temps
from personalive.signals import STOP_SIGNALS, Terminated

log = logging.getLogger(__name__)

MAX_DEATHS_IN_A_ROW = 3  # a device whose workers die this often without finishing a job is left out
STOP_SECONDS = 30.0  # how long stopped workers get to clean up before SIGKILL
EXIT_CONTEXT_LOST = 3  # a worker's exit code after a CUDA error

# runner(job, config, models, device, overwrite, progress) -> report entry (batch.run_one); picklable by name
Runner = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Slot:
    """One worker's place: ``label`` as reported (``cuda:3``, ``cpu``), the device it opens, its environment."""

    index: int
    label: str
    device: str
    env: dict[str, str]
    threads: int | None = None  # CPU workers share the cores instead of each taking all of them


def parse_devices(spec: str) -> list[Slot]:
    """``all`` (every visible GPU), ``0,1,3`` (GPU indices as CUDA lists them) or ``cpu:N`` (N CPU workers)."""
    spec = spec.strip()
    if spec == "cpu" or spec.startswith("cpu:"):
        count = spec.partition(":")[2] or "1"
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"--devices {spec!r}: expected cpu:N with N >= 1, e.g. cpu:2")
        threads = max(1, (os.cpu_count() or 1) // int(count))
        return [Slot(i, "cpu", "cpu", {"CUDA_VISIBLE_DEVICES": ""}, threads) for i in range(int(count))]
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "all":
        if visible == 0:
            raise DeviceError("--devices all: no CUDA GPU is visible on this machine (use --devices cpu:N)")
        indices = list(range(visible))
    else:
        try:
            indices = [int(part.strip().removeprefix("cuda:")) for part in spec.split(",")]
        except ValueError:
            raise ConfigError(f"--devices {spec!r}: expected all, GPU indices such as 0,1,3, or cpu:N") from None
        if len(set(indices)) != len(indices):
            raise ConfigError(f"--devices {spec!r}: a GPU is listed twice")
        bad = [i for i in indices if not 0 <= i < visible]
        if bad:
            raise DeviceError(f"--devices {spec!r}: GPU {bad[0]} does not exist ({visible} CUDA device(s) visible)")
    # CUDA numbers GPUs within the parent's CUDA_VISIBLE_DEVICES; a worker gets the matching entry of that list
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [n.strip() for n in inherited.split(",")] if inherited else [str(i) for i in range(visible)]
    return [Slot(n, f"cuda:{i}", "cuda:0", {"CUDA_VISIBLE_DEVICES": names[i]}) for n, i in enumerate(indices)]


# ------------------------------------------------------------------------------------------ the worker
class _PipeLogHandler(logging.Handler):
    """Sends a worker's log records to the parent, which logs them with the worker's name."""

    def __init__(self, send: Callable[[tuple], None]):
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(("log", record.levelno, record.getMessage()))
        except Exception:  # noqa: BLE001 - the parent is gone; nothing to tell
            pass


def _stop_signal(signum, frame) -> None:
    # the first stop signal unwinds the job (its sink deletes the temporary file); later ones must not interrupt
    # that cleanup (Ctrl-C reaches the worker from the terminal and SIGTERM from the parent)
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(f"signal {signum}")


def _worker_main(conn: Connection, slot: Slot, config: RunConfig, overwrite: bool, runner: Runner, level: int):
    os.environ.update(slot.env)  # before anything initialises CUDA (torch does so lazily)
    config.runtime.device = slot.device
    if slot.threads:
        import torch

        torch.set_num_threads(slot.threads)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_signal)
    lock = threading.Lock()  # decode/encode threads may log while the main thread reports

    def send(message: tuple) -> None:
        with lock:
            conn.send(message)

    logger = logging.getLogger("personalive")
    logger.handlers[:] = [_PipeLogHandler(send)]
    logger.setLevel(level)
    logger.propagate = False
    try:
        device, dtype = jobs.resolve_environment(config)
        models = jobs.ModelCache(config, device, dtype)
        while (job := conn.recv()) is not None:
            try:
                entry = runner(job, config, models, device, overwrite, jobs.LogProgress())
            except PersonaLiveError as exc:  # no job can run here (weights): the batch stops
                send(("fatal", exc))
                return
            lost = entry["status"] == "failed" and "CUDA error" in (entry["error"] or "")
            send(("done", entry, models.fusions, not lost))
            if lost:
                logging.getLogger(__name__).error("CUDA error: this worker exits and a fresh one replaces it")
                raise SystemExit(EXIT_CONTEXT_LOST)
    except PersonaLiveError as exc:
        send(("fatal", exc))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # stopped, or the parent is gone: the job's sink has cleaned up
    finally:
        for signum in STOP_SIGNALS:  # only exiting is left: a stop signal must not interrupt the interpreter's exit
            signal.signal(signum, signal.SIG_IGN)


# ------------------------------------------------------------------------------------------ the parent
@dataclass
class _Worker:
    slot: Slot
    process: Any
    conn: Connection
    job: Job | None = None
    since: float = 0.0
    started_at: float = 0.0  # wall clock (time.time) when its job was handed out
    last_ref: Path | None = None
    fusions: int = 0


@dataclass
class _SlotStats:
    worker: int
    device: str
    pids: list[int] = field(default_factory=list)
    jobs: int = 0
    deaths: int = 0
    deaths_in_a_row: int = 0
    left_out: bool = False


class WorkerPool:
    """Runs jobs on one worker process per :class:`Slot`; ``run`` appends one report entry per job."""

    def __init__(self, config: RunConfig, slots: list[Slot], runner: Runner, *, overwrite: bool):
        self.config, self.slots, self.runner, self.overwrite = config, slots, runner, overwrite
        self.fusions = 0
        self.stats = [_SlotStats(s.index, s.label) for s in slots]
        self._workers: list[_Worker] = []
        self._pending: list[Job] = []
        self._entries: list[dict[str, Any]] = []
        self._context = multiprocessing.get_context("spawn")

    def describe(self) -> list[dict[str, Any]]:
        """Per device: worker pids (a replaced worker adds one), jobs handed out, deaths, whether left out."""
        return [{k: v for k, v in vars(s).items() if k != "deaths_in_a_row"} for s in self.stats]

    def run(self, todo: list[Job], entries: list[dict[str, Any]]) -> None:
        self._pending = list(todo)
        self._entries = entries
        try:
            for slot in self.slots[: len(todo)]:
                self._dispatch(self._start(slot))
            while busy := [w for w in self._workers if w.job is not None]:
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for worker in busy:
                    if worker.conn in ready or worker.process.sentinel in ready:
                        self._serve(worker, entries)
            for job in self._pending:  # every device was left out
                entries.append(failed_entry(job, "not run: every worker died (see the errors above)"))
            self._pending = []
        finally:
            self._stop_all()

    # -------------------------------------------------------------------------------- workers
    def _start(self, slot: Slot) -> _Worker:
        mine, theirs = self._context.Pipe()
        level = logging.getLogger("personalive").getEffectiveLevel()
        args = (theirs, slot, self.config, self.overwrite, self.runner, level)
        process = self._context.Process(target=_worker_main, args=args, name=f"personalive-w{slot.index}")
        process.daemon = True  # never outlive the parent
        process.start()
        theirs.close()
        worker = _Worker(slot, process, mine)
        self._workers.append(worker)
        self.stats[slot.index].pids.append(process.pid)
        log.info("worker %d (%s) started, pid %d", slot.index, slot.label, process.pid)
        return worker

    def _dispatch(self, worker: _Worker) -> None:
        if not self._pending:
            worker.job = None
            _send(worker, None)  # no more work: the worker exits
            return
        same_ref = [j for j in self._pending if j.ref == worker.last_ref]
        job = same_ref[0] if same_ref else self._pending[0]
        self._pending.remove(job)
        worker.job, worker.since, worker.last_ref = job, time.perf_counter(), job.ref
        worker.started_at = time.time()
        log.info("worker %d (%s, pid %d): job %d -> %s", worker.slot.index, worker.slot.label, worker.process.pid,
                 job.index, job.out)  # fmt: skip
        _send(worker, job)

    def _serve(self, worker: _Worker, entries: list[dict[str, Any]]) -> None:
        """Handle what a worker sent; a worker that is gone with a job in flight has that job failed."""
        keep_going, gone = True, False
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message[0] == "log":
                    log.log(message[1], "[w%d %s] %s", worker.slot.index, worker.slot.label, message[2])
                elif message[0] == "fatal":
                    worker.job = None  # it exits by itself
                    raise message[1]
                else:
                    keep_going = self._finished(worker, entries, *message[1:])
                    if not keep_going:
                        break
        except (EOFError, OSError):
            gone = True  # its end of the pipe is closed: it has exited or is exiting
        if keep_going and not gone and worker.process.is_alive():
            return
        worker.process.join(STOP_SECONDS)
        if worker.process.is_alive():  # closed its pipe but does not exit
            worker.process.kill()
            worker.process.join()
        self._workers.remove(worker)
        worker.conn.close()
        if worker.job is not None:
            self._died(worker, entries)
        self._replace(worker.slot)

    def _finished(self, worker: _Worker, entries, entry: dict, fusions: int, keep_going: bool) -> bool:
        entries.append({**entry, "worker": worker.slot.index, "device": worker.slot.label})
        self.fusions += fusions - worker.fusions
        worker.fusions = fusions
        stats = self.stats[worker.slot.index]
        stats.jobs += 1
        if entry["status"] == "done":
            stats.deaths_in_a_row = 0
        if not keep_going:  # a CUDA error: the worker exits and is replaced
            stats.deaths_in_a_row += 1
        worker.job = None
        if keep_going:
            self._dispatch(worker)
        return keep_going

    def _died(self, worker: _Worker, entries: list[dict[str, Any]]) -> None:
        job, stats = worker.job, self.stats[worker.slot.index]
        reason = _death_reason(worker.process.exitcode)
        message = f"worker {worker.slot.index} ({worker.slot.label}, pid {worker.process.pid}) died: {reason}"
        log.error("job %d failed: %s", job.index, message)
        entries.append(
            failed_entry(job, message, round(time.perf_counter() - worker.since, 4))
            | {"worker": worker.slot.index, "device": worker.slot.label}
        )
        remove_stale_temps(job.out)  # its partial output (the sink names temporary files after the writer's pid)
        stats.jobs += 1
        stats.deaths += 1
        stats.deaths_in_a_row += 1
        worker.job = None

    def _replace(self, slot: Slot) -> None:
        stats = self.stats[slot.index]
        if not self._pending:
            return
        if stats.deaths_in_a_row >= MAX_DEATHS_IN_A_ROW:
            stats.left_out = True
            log.error("worker %d (%s): %d workers in a row died; this device is left out", slot.index, slot.label,
                      stats.deaths_in_a_row)  # fmt: skip
            return
        self._dispatch(self._start(slot))

    def _stop_all(self) -> None:
        """Stop every worker still running (SIGTERM, then SIGKILL) and close the pipes."""
        for worker in self._workers:
            if worker.process.is_alive() and worker.job is not None:
                try:
                    os.kill(worker.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        with _stop_signals_ignored():  # a second Ctrl-C must not leave workers running
            deadline = time.monotonic() + STOP_SECONDS
            for worker in self._workers:
                worker.process.join(max(0.0, deadline - time.monotonic()))
                if worker.process.is_alive():
                    log.warning("worker %d (pid %d) did not stop; killed", worker.slot.index, worker.process.pid)
                    worker.process.kill()
                    worker.process.join()
                    if worker.job is not None:
                        remove_stale_temps(worker.job.out)
                # a job the worker finished and published just before the stop, whose "done" was still in the
                # pipe (defined for this, but never called until a loaded CI machine lost that job's entry)
                self._last_words(worker)
                if worker.job is not None:
                    self._published(worker)
                worker.conn.close()
        self._workers = []

    def _last_words(self, worker: _Worker) -> None:
        """Record a job a stopped worker finished before it stopped (its output is published: it is done)."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message[0] == "done":
                    self._entries.append({**message[1], "worker": worker.slot.index, "device": worker.slot.label})
                    worker.job = None
        except (EOFError, OSError):
            pass

    def _published(self, worker: _Worker) -> None:
        """A job its worker published but could not report (the stop came between the two): done."""
        seconds = round(time.perf_counter() - worker.since, 4)
        entry = published_entry(worker.job, worker.started_at, seconds)
        if entry is not None:
            self._entries.append(entry | {"worker": worker.slot.index, "device": worker.slot.label})
            worker.job = None


@contextmanager
def _stop_signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _send(worker: _Worker, message: Job | None) -> None:
    try:
        worker.conn.send(message)
    except OSError:
        pass  # the worker is gone: its sentinel tells the loop


def _death_reason(exitcode: int) -> str:
    if exitcode == EXIT_CONTEXT_LOST:
        return "CUDA error (the worker was replaced)"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else f"signal {-exitcode}"
        hint = " (kill -9 or the out-of-memory killer)" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {exitcode}"
