"""``torch.compile`` for an attack's loss: one compiled function per loss, built on first use.

The loss of every PGD attack (the model's forward and the entropy model's likelihoods) is
compiled by TorchDynamo and Inductor when the attack is built with ``compiled=True``. Dynamo
splits the graph where it cannot trace (the seeded ``torch.rand`` draws of the noisy copies run
eagerly in between, from the call's generator, so the random stream is the same as without
compiling) and recompiles for a new model architecture or batch shape, after which the batch
dimension is dynamic.

Compiling costs time once per (loss, architecture, shape) in a process: about 5-45 s on this
project's 2-core CPU, less when Inductor's on-disk cache already holds the kernels. It pays
back on long runs (thousands of images per model); ``benchmarks/attacks.py`` measures both
the compile time and the steady-state speed against eager, and
``tests/threats/test_compiled_attack.py`` holds the compiled attack's inflation within 1 point
of the eager one's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import torch

#: Compiled programs kept per loss function (Dynamo's default limit of 8 would fall back to
#: eager silently after a few models in a campaign worker).
RECOMPILE_LIMIT = 64

_COMPILED: dict[Callable, Callable] = {}


class CompileError(RuntimeError):
    """``torch.compile`` could not build the loss on this machine."""


def _no_cuda_notice(record: logging.LogRecord) -> bool:
    """False for torch's notice that a machine without CUDA uses a default CUDA_HOME (printed
    when Inductor builds its first CPU kernel; nothing here needs CUDA for it)."""
    return not record.getMessage().startswith("No CUDA runtime is found")


def compiled(loss: Callable) -> Callable:
    """``loss`` (a plain function, e.g. ``RatePGD.loss``) compiled once per process."""
    if loss not in _COMPILED:
        notices = logging.getLogger("torch.utils.cpp_extension")
        if _no_cuda_notice not in notices.filters:
            notices.addFilter(_no_cuda_notice)
        _COMPILED[loss] = torch.compile(loss)
    return _COMPILED[loss]


@contextlib.contextmanager
def compiling() -> Iterator[None]:
    """Run compiled losses and their backward passes in the block (AOTAutograd may build the
    backward program lazily, at the first gradient): the recompile limit raised to
    :data:`RECOMPILE_LIMIT`, and a compiler failure turned into one :class:`CompileError` that
    says what to do."""
    try:
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            yield
    except torch._dynamo.exc.BackendCompilerFailed as exc:
        inner = exc.inner_exception
        first_line = (str(inner).splitlines() or [""])[0][:200]
        raise CompileError(
            f"torch.compile could not build the attack's loss ({type(inner).__name__}: "
            f"{first_line}). Inductor needs a working C++ compiler on the CPU (apt-get install "
            "g++) and Triton on a GPU; or run the attack with compiled=False"
        ) from exc
