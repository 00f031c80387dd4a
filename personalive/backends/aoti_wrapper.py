"""The C++ side of an AOTInductor package: its wrapper must share PyTorch's libstdc++, and loading it must not
compile anything.

The wrapper (``*.wrapper.so`` inside the ``.pt2``) is built with the machine's C++ compiler and ``dlopen``-ed into
PyTorch's process by ``aoti_load_package``. Both facts below were found on the H200 this project measures on
(benchmarks/RESULTS.md, fourth session).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from personalive.errors import PersonaLiveError

# A wrapper with libstdc++ linked in statically (a C++ compiler set up to do that: the GPU machine's default
# ``CXX`` was one) cannot be loaded into PyTorch's process: its first std::regex (the runtime's device-string
# parser, in the model's constructor) looks up the process's std::locale facets by its own copy's facet ids and
# a virtual call lands in the wrong facet -- a segfault ~35 s into the load, no message. Seen on every CUDA package
# there (toys included, whatever the options); ``-lstdc++`` on the link line does not undo it. Checked at build
# and at load from the wrapper's DT_NEEDED entries (:func:`check_wrapper`).
STATIC_LIBSTDCXX_HINT = "set CXX to a compiler that links libstdc++ dynamically (e.g. CXX=/usr/bin/g++)"

# Loading must not compile. ``aoti_load_package`` compares this machine with the package's build machine, the CPU's
# vector ISA included (inductor's ``pick_vec_isa``), and inductor finds that ISA by compiling a test library per
# candidate ISA with the C++ compiler and loading each in a child process. On the H200's host (AVX-512 with BF16
# and VNNI, AMX) that was 6 compilations and 6 child interpreters importing torch (torch 2.11): 26 of a full-size
# package's 27 s first load, and 26 of a 34 s toy's (fifth session). ``cpp.vec_isa_ok`` (inductor's own switch)
# skips only the base test of each ISA: the AVX-512 BF16/VNNI and AMX sub-tests run anyway, so during a load the
# test build itself (``VecISA.check_build``) is also replaced by "the CPU's flags are right" -- what ``vec_isa_ok``
# means, extended to the sub-tests. The CPU's flags still decide the ISA reported, which is what a working
# compiler's tests would find. Both are undone after the load; inductor caches the ISA for the process.
LOAD_OPTIONS: dict[str, Any] = {"cpp.vec_isa_ok": True}
SKIP_ISA_TEST_BUILDS = True  # False: the loader's own behaviour (the benchmarks' and tests' control)


@contextmanager
def loading() -> Iterator[None]:
    """The context of a package's load: no ISA test builds (see :data:`LOAD_OPTIONS`)."""
    import torch._inductor.config
    from torch._inductor import cpu_vec_isa

    if not SKIP_ISA_TEST_BUILDS:
        yield
        return
    isa = getattr(cpu_vec_isa, "VecISA", None)
    saved = getattr(isa, "check_build", None)
    with torch._inductor.config.patch(LOAD_OPTIONS):
        if saved is not None:
            isa.check_build = _trust_cpu_flags
        try:
            yield
        finally:
            if saved is not None:
                isa.check_build = saved


def _trust_cpu_flags(self: Any, code: str) -> bool:
    return True


class AOTIError(PersonaLiveError):
    """The export, the compilation or the loading of an AOTInductor package failed."""


def check_wrapper(path: Path, *, building: bool = False) -> None:
    """Refuse a package whose C++ wrapper has libstdc++ linked in statically (see :data:`STATIC_LIBSTDCXX_HINT`)."""
    import zipfile

    from personalive.backends.elf import needed_libraries

    try:
        with zipfile.ZipFile(path) as archive:
            wrappers = [name for name in archive.namelist() if name.endswith(".so")]
            for name in wrappers:
                needed = needed_libraries(archive.read(name))
                if not _static_libstdcxx(needed):
                    continue
                if building:
                    raise AOTIError(
                        f"{path}: the C++ compiler ({_compiler()}) linked libstdc++ statically into the package's "
                        f"wrapper, which crashes PyTorch's process when loaded; {STATIC_LIBSTDCXX_HINT} and rebuild"
                    )
                raise AOTIError(
                    f"{path}: the package's C++ wrapper has libstdc++ linked in statically, which crashes PyTorch's "
                    f"process when loaded; rebuild it with `personalive build-engine --format aoti` after you "
                    f"{STATIC_LIBSTDCXX_HINT}"
                )
    except (zipfile.BadZipFile, OSError) as exc:
        raise AOTIError(f"{path}: not a readable AOTInductor package ({exc})") from exc


# uses libstdc++ out of line (the exception's constructor, __cxa_throw), so a shared libstdc++ shows in DT_NEEDED
PREFLIGHT_SOURCE = '#include <stdexcept>\nvoid personalive_probe() { throw std::runtime_error("probe"); }\n'


def check_compiler() -> None:
    """Before a build (minutes): link a one-line shared object with the compiler AOTInductor will use and refuse,
    in about a second, a compiler that cannot build one or that links libstdc++ statically."""
    import subprocess
    import sys
    import tempfile

    from personalive.backends.elf import needed_libraries

    if not sys.platform.startswith("linux"):
        return  # DT_NEEDED is an ELF notion; elsewhere the checks after the build still run
    compiler = _compiler()
    with tempfile.TemporaryDirectory(prefix="personalive-cxx-") as folder:
        source, library = Path(folder) / "probe.cpp", Path(folder) / "probe.so"
        source.write_text(PREFLIGHT_SOURCE)
        try:
            proc = subprocess.run(
                [compiler, "-shared", "-fPIC", str(source), "-o", str(library)], capture_output=True, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AOTIError(f"the C++ compiler {compiler!r} could not be run ({exc}); AOTInductor needs one") from exc
        if proc.returncode != 0:
            detail = (proc.stderr.decode(errors="replace").strip().splitlines() or [""])[-1][:200]
            raise AOTIError(f"the C++ compiler {compiler!r} cannot build a shared library ({detail})")
        needed = needed_libraries(library.read_bytes())
    if _static_libstdcxx(needed):
        raise AOTIError(
            f"the C++ compiler {compiler!r} links libstdc++ statically, and a package built with it crashes "
            f"PyTorch's process when loaded; {STATIC_LIBSTDCXX_HINT}"
        )


def _static_libstdcxx(needed: list[str] | None) -> bool:
    """A C++ shared object whose DT_NEEDED lacks libstdc++ carries its own copy (None: not an ELF we read)."""
    return needed is not None and not any(lib.startswith("libstdc++") for lib in needed)


def _compiler() -> str:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return str(get_cpp_compiler())
    except Exception:  # noqa: BLE001 - a private API: only used to name the compiler in a message
        import os

        return os.environ.get("CXX", "g++")
