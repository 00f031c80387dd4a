"""The C++ side of an AOTInductor package: its wrapper must share PyTorch's libstdc++, and loading it must not
compile anything.

The wrapper (``*.wrapper.so`` inside the ``.pt2``) is built with the machine's C++ compiler and ``dlopen``-ed into
PyTorch's process by ``aoti_load_package``. Both facts below were found on the H200 this project measures on
(benchmarks/RESULTS.md, fourth session).
"""

from __future__ import annotations

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

# inductor options while a package loads. ``aoti_load_package`` first compares this machine with the package's
# build machine, the CPU's vector ISA included, and inductor finds that ISA by compiling a test library per
# candidate ISA with the C++ compiler and loading each in a child process -- compilation a loader has no use for.
# On this 2-core machine that is 3.4-3.8 s of a load that takes 0.1 s without it (empty inductor cache); on the
# H200 a package's first load in a process took 47-52 s (0.1 s the second time), which this is the suspected
# cause of (not yet measured there). ``vec_isa_ok`` skips only the compile-and-load test: the CPU's own flags
# still decide the ISA reported.
LOAD_OPTIONS: dict[str, Any] = {"cpp.vec_isa_ok": True}


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
