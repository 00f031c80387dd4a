"""Where one eager window step's GPU time goes: by aten op and the source line that called it, and by module.

    python -m benchmarks.step_profile --out FILE.json [--size full|tiny] [--device cuda|cpu] [--keyframes 3]

Random networks built on the device (``benchmarks/random_run.py``). One step is profiled (after warm-up) with the
torch profiler, Python stacks recorded and every module's forward labelled (forward hooks around a
``record_function``). Each kernel's device time is charged to the aten op that launched it, that op's innermost
module (class and qualified name) and its nearest caller in personalive or diffusers (found on the CPU; in the
sixth session's H200 runs the Python frames were not parents of the ops and the caller column came out empty: the
module labels carry the attribution). On a CPU (the smoke test) the ops' own CPU time stands in for device time.
The step is profiled ``--repeats`` times; the fastest profile is kept (the GPU may be shared with a build).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("benchmarks.step_profile")
LABEL = "mod:"
OUR_CODE = ("personalive/", "diffusers/")


class ModuleLabels:
    """Forward hooks that wrap every submodule's call in ``record_function("mod:<Class>|<qualified name>")``."""

    def __init__(self, roots: dict[str, nn.Module]) -> None:
        self.handles = []
        self.open: list = []
        for root_name, root in roots.items():
            for name, module in root.named_modules():
                label = f"{LABEL}{type(module).__name__}|{root_name}.{name}".rstrip(".")
                self.handles.append(module.register_forward_pre_hook(self._enter(label)))
                self.handles.append(module.register_forward_hook(self._exit))

    def _enter(self, label: str):
        def hook(module, args):
            ctx = torch.profiler.record_function(label)
            ctx.__enter__()
            self.open.append(ctx)

        return hook

    def _exit(self, module, args, output):
        self.open.pop().__exit__(None, None, None)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _kernel_us(event) -> float:
    return sum(k.duration for k in getattr(event, "kernels", []) or [])


def _owner(event):
    """The nearest aten op at or above ``event`` (kernels hang off the op or its cudaLaunchKernel child)."""
    node = event
    while node is not None and not node.name.startswith("aten::"):
        node = node.cpu_parent
    return node or event


def _context(event) -> tuple[str, str, str]:
    """(innermost module label, the chain of module classes, the nearest caller line in our code or diffusers)."""
    labels, caller, node = [], "", event
    while node is not None:
        if node.name.startswith(LABEL):
            labels.append(node.name[len(LABEL) :])
        if not caller:  # Python frames are events of their own (the python tracer) or, in older builds, stacks
            frames = [node.name, *(node.stack or [])]
            caller = next((frame for frame in frames if any(c in frame for c in OUR_CODE)), "")
        node = node.cpu_parent
    innermost = labels[0] if labels else "(no module)"
    chain = ">".join(label.split("|")[0] for label in reversed(labels[:4]))
    return innermost, chain, caller.split("site-packages/")[-1].split("/work/")[-1]


def analyse(prof, device_type: str) -> dict:
    events = list(prof.events())
    charges = []  # (time_us, op, kernel, innermost, chain, caller, shapes)
    for event in events:
        if device_type == "cuda":
            us = _kernel_us(event)
            if not us:
                continue
            op = _owner(event)
            for kernel in event.kernels:
                innermost, chain, caller = _context(op)
                charges.append((kernel.duration, op.name, kernel.name, innermost, chain, caller, str(op.input_shapes)))
        elif event.name.startswith("aten::") and not any(c.name.startswith("aten::") for c in event.cpu_children):
            innermost, chain, caller = _context(event)
            charges.append(
                (event.self_cpu_time_total, event.name, "(cpu)", innermost, chain, caller, str(event.input_shapes))
            )
    total = sum(c[0] for c in charges) or 1.0

    def table(key, top=40):
        sums: dict = defaultdict(lambda: [0.0, 0])
        for c in charges:
            k = key(c)
            sums[k][0] += c[0]
            sums[k][1] += 1
        rows = sorted(sums.items(), key=lambda kv: -kv[1][0])[:top]
        return [
            {
                "key": k if isinstance(k, str) else " | ".join(k),
                "ms": round(v[0] / 1000, 3),
                "pct": round(100 * v[0] / total, 1),
                "count": v[1],
            }
            for k, v in rows
        ]

    def module_class(c) -> str:
        return c[3].split("|")[0]

    return {
        "device_ms": round(total / 1000, 2),
        "launches": len(charges),
        "by_op": table(lambda c: c[1]),
        "by_kernel": table(lambda c: c[2][:160]),
        "by_op_and_caller": table(lambda c: (c[1], c[5]), top=60),
        "by_innermost_module_class_and_op": table(lambda c: (module_class(c), c[1]), top=60),
        "by_module_chain": table(lambda c: c[4], top=60),
        "by_op_caller_shapes": table(lambda c: (c[1], c[5], c[6][:200]), top=60),
        "by_network": table(lambda c: c[3].split("|")[-1].split(".")[0], top=10),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--keyframes", type=int, nargs="+", default=[3, 0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.random_run import random_run
    from personalive.backends.eager import EagerWindowStep
    from personalive.config import load_config
    from personalive.pipeline.window import example_window_inputs

    t0 = time.perf_counter()
    models, device, options = random_run(args.size, args.device)
    config = load_config(options={**options, "runtime.cuda_graphs": "off"})
    step = EagerWindowStep.from_models(models, config, device)
    module = step.module
    roots = {name: getattr(module, name) for name in ("pose_guider", "motion_encoder", "denoising_unet", "vae")}
    result: dict = {"build_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    dtype = next(module.denoising_unet.parameters()).dtype
    for keyframes in args.keyframes:
        g = torch.Generator(device).manual_seed(keyframes)
        inputs = example_window_inputs(models, config, device, dtype, num_keyframes=keyframes, generator=g)
        with torch.inference_mode():
            for _ in range(3):
                step(inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = None
            labels = ModuleLabels(roots)
            try:
                for _ in range(args.repeats):
                    with profile(activities=activities, with_stack=True, record_shapes=True) as prof:
                        step(inputs)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                    found = analyse(prof, device.type)
                    log.info(
                        "keyframes %d: %.1f ms of device time in %d kernels",
                        keyframes,
                        found["device_ms"],
                        found["launches"],
                    )
                    if best is None or found["device_ms"] < best["device_ms"]:
                        best = found
            finally:
                labels.remove()
        result[f"keyframes_{keyframes}"] = best
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
