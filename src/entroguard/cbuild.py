"""Small C kernels compiled at run time and loaded with :mod:`ctypes`.

Used where a loop is too fine-grained for PyTorch or Python (the TV defence's fused iteration,
the rANS string check). Each kernel is compiled once per process with the C compiler found at
run time (``$CC``, else ``cc``, ``gcc`` or ``clang``), trying its flag sets in order, into a
temporary folder (the loaded library outlives its file on POSIX). Every caller keeps a pure
PyTorch or Python path for machines without a compiler, and an environment variable that
switches its kernel off.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

#: Compiler flags tried in order until one set builds.
NATIVE_FLAGS: tuple[tuple[str, ...], ...] = (
    ("-O3", "-march=native"),
    ("-O3", "-mcpu=native"),
    ("-O3",),
)
#: Flags for code that gains nothing from the machine's vector extensions.
PORTABLE_FLAGS: tuple[tuple[str, ...], ...] = (("-O2",),)


def compilers() -> list[list[str]]:
    """Compiler command lines to try: ``$CC`` first, then ``cc``, ``gcc``, ``clang``."""
    found = []
    if os.environ.get("CC"):
        found.append(shlex.split(os.environ["CC"]))
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path and [path] not in found:
            found.append([path])
    return found


def switched_off(variable: str) -> bool:
    """Whether the environment variable ``variable`` says 0, false, no or off."""
    return os.environ.get(variable, "1").strip().lower() in ("0", "false", "no", "off")


def build(source: str, stem: str, flag_sets=NATIVE_FLAGS, compilers_to_try=None) -> ctypes.CDLL:
    """Compile the C ``source`` into a shared library named after ``stem`` and load it.

    Raises ``RuntimeError`` listing every attempt when no compiler and flag set works.
    """
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"entroguard-{stem}-") as folder:
        path = Path(folder) / f"{stem}.c"
        path.write_text(source)
        for compiler in compilers() if compilers_to_try is None else compilers_to_try:
            for flags in flag_sets:
                library = Path(folder) / f"{stem}_{len(errors)}.so"
                command = [*compiler, *flags, "-fPIC", "-shared", str(path), "-o", str(library)]
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
                except (OSError, subprocess.SubprocessError) as error:
                    errors.append(f"{' '.join(command)}: {error}")
                    continue
                if done.returncode == 0:
                    return ctypes.CDLL(str(library))
                errors.append(f"{' '.join(command)}: {done.stderr.strip()[-300:]}")
    raise RuntimeError("; ".join(errors) or "no C compiler found ($CC, cc, gcc, clang)")
