"""Which torch device a command computes on (``--device cpu|cuda|cuda:N|auto``).

Networks, attacks and defences run on the chosen device (the leak probes train on the CPU
cores); the rANS coder itself runs on the CPU, and decoding stays exact and portable because
the decoder's scale indexes and means come from the integer hyper-synthesis. A device this
machine does not have is one clear error, never a crash deep inside a measurement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from entroguard.errors import InputError

if TYPE_CHECKING:  # torch is imported where a device is resolved: the CLI starts without it
    import torch
    from torch import nn

DEVICE_HELP = "cpu, cuda, cuda:N, or auto (CUDA when this machine has it, else cpu)."


def resolve_device(name: str | torch.device) -> torch.device:
    """``name`` as a torch device this machine has.

    Raises:
        InputError: an unknown device name, or CUDA on a machine without it (the message
            says which devices there are).
    """
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}: use {DEVICE_HELP}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise InputError(f"device {name!r} is not supported: use {DEVICE_HELP}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InputError(f"device {name!r}: this machine has no CUDA device; use --device cpu")
    if device.index is not None and device.index >= count:
        raise InputError(f"device {name!r}: this machine has {count} CUDA device(s), "
                         f"cuda:0 to cuda:{count - 1}")  # fmt: skip
    return device


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer (CPU for one without any)."""
    import torch

    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")
