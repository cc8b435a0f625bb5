"""Import CompressAI without the warning its import prints.

CompressAI imports ``torch_geometric`` (for its transform registry), which calls
``torch.jit.script`` at import time, and torch 2.14 warns that this is deprecated: a
FutureWarning on every ``entroguard`` command and in every worker process, about code neither
entroguard nor its users can change. It is silenced for this one import only; the same warning
from anywhere else still shows. Importing this module does it; ``entroguard.codec`` and
``entroguard.models`` import it first, before any of their modules imports CompressAI.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                            category=FutureWarning)  # fmt: skip
    import compressai  # noqa: F401
