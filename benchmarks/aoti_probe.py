"""Why does ``aoti_load_package`` crash on CUDA? Small packages, one option changed at a time, loaded in child
processes (a segfault ends the child, not the probe).

    python -m benchmarks.aoti_probe --out FILE.json [--device cuda] [--package FULL.pt2 ...]

Variants of a toy fp16 network with an fp32 buffer, like the window step's (DDIM tables and embeddings stay fp32):
our package options (constants outside the shared object, wrapper at -O0), constants inside, the default wrapper
optimisation level, and the network without the fp32 buffer. ``--package`` also tries to load given packages
(the full-size step built by call B) in a child, with ``device_index`` -1 and 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

CHILD = r"""
import sys, time
t0 = time.perf_counter()
import torch
path, device, user_managed = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
index = int(sys.argv[4]) if len(sys.argv) > 4 else -1
print(f"torch imported {time.perf_counter() - t0:.1f}s", flush=True)
if device == "cuda":
    torch.zeros(1, device=device)
    print(f"cuda ready {time.perf_counter() - t0:.1f}s", flush=True)
import re
maps = open("/proc/self/maps").read()
print("libstdc++ mapped:", sorted(set(re.findall(r"/\S*libstdc\+\+\S*", maps))), flush=True)
print("loading", flush=True)
model = torch._inductor.aoti_load_package(path, device_index=index)
print("loaded; constants", len(model.get_constant_fqns()), flush=True)
if user_managed:
    state = torch.load(path + ".state", weights_only=True)
    model.load_constants({k: v.to(device) for k, v in state.items()}, check_full_update=True, user_managed=True)
    x = torch.load(path + ".x", weights_only=True).to(device)
    out = model(x)
    y = out[0] if isinstance(out, (list, tuple)) else out
    ref = torch.load(path + ".y", weights_only=True).to(device)
    print("ran; max abs diff", float((y.float() - ref.float()).abs().max()), flush=True)
"""


class Toy(torch.nn.Module):
    def __init__(self, fp32_buffer: bool) -> None:
        super().__init__()
        self.a = torch.nn.Linear(64, 64)
        self.b = torch.nn.Linear(64, 64)
        self.fp32_buffer = fp32_buffer
        if fp32_buffer:
            self.register_buffer("table", torch.linspace(0.5, 1.5, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.silu(self.a(x))
        if self.fp32_buffer:
            h = (h.float() * self.table).to(x.dtype)
        return self.b(h)


def child(path: Path, device: str, user_managed: bool, index: int = -1, debugger: bool = False) -> dict:
    start = time.perf_counter()
    command = [
        sys.executable,
        "-X",
        "faulthandler",
        "-c",
        CHILD,
        str(path),
        device,
        str(int(user_managed)),
        str(index),
    ]
    if debugger:  # cuda-gdb is the machine's only debugger; it also debugs host code: the native stack at the crash
        gdb = ["-ex", "run", "-ex", "bt 40", "-ex", "info registers rip", "-ex", "x/6i $pc", "-ex", "info threads"]
        command = ["cuda-gdb", "-batch", *gdb, "--args", *command]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:400]}
    return {
        "rc": proc.returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "stdout": proc.stdout[-(12000 if debugger else 600) :],
        "stderr": proc.stderr[-1200:] if proc.returncode or debugger else "",
    }


def shell(command: str) -> str:
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    return (proc.stdout + proc.stderr)[-3000:]


def toolchain() -> dict:
    """Is the machine's ``g++`` the compiler itself or a wrapper, and does a shared object it links need the
    shared libstdc++ (a wrapper that links libstdc++ statically gives the package its own std::locale)?"""
    work = Path(tempfile.mkdtemp(prefix="aoti-cxx-"))
    (work / "t.cpp").write_text(
        "#include <regex>\n#include <string>\nbool f(const std::string& s) "
        '{ return std::regex_match(s, std::regex("(cpu|cuda)(:([0-9]+))?")); }\n'
    )
    return {
        "which": shell("type -a g++ c++ g++-real 2>&1; ls -la $(command -v g++) $(readlink -f $(command -v g++))"),
        "g++ file": shell("file -L $(command -v g++)"),
        "g++ script": shell("f=$(command -v g++); file -L $f | grep -q text && head -c 1500 $f"),
        "link line": shell(
            f"cd {work} && g++ -v -shared -fPIC t.cpp -o t.so 2>&1 | grep -E 'collect2|ld ' | tail -c 1500"
        ),
        "needed": shell(f"readelf -d {work / 't.so'} | grep NEEDED"),
    }


def environment(package: Path | None) -> dict:
    """The toolchain AOTInductor compiled with, and the libraries the package's shared object links."""
    from torch.utils import cpp_extension

    facts = {
        "CUDA_HOME": str(cpp_extension.CUDA_HOME),
        "nvcc": shell("nvcc --version | tail -n 2"),
        "cxx": shell("${CXX:-g++} --version | head -n 1"),
        "torch_cuda": torch.version.cuda,
        "libcudart_loaded": shell(f"grep -o '/[^ ]*libcudart[^ ]*' /proc/{os.getpid()}/maps | sort -u"),
        "mounts_tmp": shell("grep -E ' /tmp | / ' /proc/mounts"),
    }
    if package is not None:
        work = Path(tempfile.mkdtemp(prefix="aoti-unzip-"))
        with zipfile.ZipFile(package) as archive:
            names = archive.namelist()
            facts["package_files"] = [n for n in names if not n.endswith((".json", ".py"))][:40]
            for name in names:
                if name.endswith(".so"):
                    archive.extract(name, work)
                    facts[f"ldd {Path(name).name}"] = shell(f"ldd {work / name}")
                    facts["needed"] = shell(f"readelf -d {work / name} | grep NEEDED")
                    facts["codecvt<char16_t> symbols defined in the wrapper (0 unless libstdc++ is linked in)"] = (
                        shell(f"nm -C --defined-only {work / name} | grep -c 'codecvt<char16_t'")
                    )
    return facts


def needed(package: Path) -> str:
    """The shared libraries the package's wrapper needs, and how many codecvt<char16_t> symbols it defines (0
    unless libstdc++ is linked into it)."""
    work = Path(tempfile.mkdtemp(prefix="aoti-needed-"))
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            if name.endswith(".so"):
                archive.extract(name, work)
                return shell(
                    f"readelf -d {work / name} | grep NEEDED; "
                    f"nm -C --defined-only {work / name} | grep -c 'codecvt<char16_t'"
                )
    return "no .so"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--package", type=Path, action="append", default=[])
    p.add_argument("--debugger", action="store_true", help="also load the first toy under cuda-gdb (native stack)")
    p.add_argument("--fixes", action="store_true", help="the toolchain facts and the candidate fixes only")
    args = p.parse_args()
    results: dict = {"torch": torch.__version__}
    if args.device == "cuda":
        torch.zeros(1, device="cuda")  # so that the loaded libcudart shows in the process map

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=1) + "\n")

    for package in args.package:
        for index in (-1, 0):
            results[f"load {package.name} device_index={index}"] = child(package, args.device, False, index)
            save()
    ours = {"aot_inductor.package_constants_in_so": False, "aot_inductor.compile_wrapper_opt_level": "O0"}
    variants: dict = {
        "ours, fp32 buffer": (ours, True),
        "ours, debug symbols (-g), fp32 buffer": ({**ours, "aot_inductor.debug_compile": True}, True),
        "ours, no fp32 buffer": (ours, False),
        "constants in so, fp32 buffer": ({}, True),
        "constants outside, default -O level, fp32 buffer": ({"aot_inductor.package_constants_in_so": False}, True),
    }
    if args.fixes:  # fourth session: the wrapper links libstdc++ statically? link the shared one, or the compiler
        results["toolchain"] = toolchain()
        save()
        real = shell("command -v g++-real").strip()
        variants = {
            "ours + shared libstdc++ (custom_op_libs)": ({**ours, "aot_inductor.custom_op_libs": ["stdc++"]}, True)
        }
        if real:
            variants[f"ours, compiler {real}"] = ({**ours, "cpp.cxx": (None, real)}, True)
        variants["ours, on the CPU (control)"] = (ours, True, "cpu")
    work = Path(tempfile.mkdtemp(prefix="aoti-probe-"))
    for i, (name, spec) in enumerate(variants.items()):
        options, buffer = spec[0], spec[1]
        device = torch.device(spec[2] if len(spec) > 2 else args.device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        torch.manual_seed(0)
        module = Toy(buffer).to(device)
        module.a.to(dtype), module.b.to(dtype)
        x = torch.randn(8, 64, device=device, dtype=dtype)
        with torch.no_grad():
            y = module(x)
        start = time.perf_counter()
        try:
            program = torch.export.export(module, (x,), strict=False)
            path = Path(
                torch._inductor.aoti_compile_and_package(
                    program, package_path=str(work / f"v{i}.pt2"), inductor_configs=options
                )
            )
        except Exception as exc:  # noqa: BLE001 - recorded
            results[name] = {"build_error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            save()
            continue
        torch.save({k: v.detach().cpu() for k, v in {**module.state_dict()}.items()}, str(path) + ".state")
        torch.save(x.cpu(), str(path) + ".x")
        torch.save(y.cpu(), str(path) + ".y")
        row = {"build_s": round(time.perf_counter() - start, 1), "options": options}
        row["load"] = child(path, device.type, user_managed=True)
        if i == 0:
            results["environment"] = environment(path)
        row["needed"] = needed(path)
        if args.debugger and i == 1:
            row["load_under_cuda_gdb"] = child(path, args.device, user_managed=True, debugger=True)
        results[name] = row
        save()
    codes = {k: v.get("rc", v.get("load", {}).get("rc")) for k, v in results.items() if isinstance(v, dict)}
    print(json.dumps(codes))


if __name__ == "__main__":
    main()
