"""Import weights the user already has: sc2bench entropic students, torchvision (or timm)
classifiers.

Nothing is downloaded. A ``.safetensors`` file is read without pickle; a ``.pt``/``.pth`` file is
pickle-based and is read only when the caller passes ``allow_pickle=True`` (CLI:
``--allow-pickle``), and even then with PyTorch's restricted unpickler
(``torch.load(..., weights_only=True)``), which builds tensors and plain containers only.

Key layouts (ours on the right; see ``entroguard.models.imagenet``)::

    bottleneck_layer.encoder.* / g_a.*        encoder.*
    bottleneck_layer.decoder.* / g_s.*        decoder.*
    bottleneck_layer.entropy_bottleneck.*     codec.entropy_bottleneck.*
    bottleneck_layer.{h_a,h_s,gaussian_conditional}.*   codec.{h_a,h_s,gaussian_conditional}.*
    layer2.* layer3.* layer4.* fc.*           backbone_tail.layer2.* ... backbone_tail.fc.*
    s{N}.b{i+1}.conv1.conv (timm RegNet)      backbone_tail.trunk_output.block{N}.block{N}-{i}.f.a.0
    head.fc.*                                 backbone_tail.fc.*

CompressAI renamed the factorized density's parameters (``_matrix0`` -> ``matrices.0``,
``_bias0`` -> ``biases.0``, ``_factor0`` -> ``factors.0``); both spellings are read. Coder tables
(``_quantized_cdf``, ``_offset``, ``_cdf_length``, ``scale_table``) are dropped and rebuilt.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import re
from pathlib import Path

import torch
from compressai.entropy_models import EntropyBottleneck
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from entroguard.errors import CheckpointError
from entroguard.models.imagenet import ARCHS, IMAGENET_CLASSES, build_imagenet, canonical_arch
from entroguard.models.split import CODER_TABLE_SUFFIXES, SplitClassifier
from entroguard.train.checkpoint import load_learned_state, state_mismatch

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")

# sc2bench bottleneck prefixes -> ours, per prior.
_BOTTLENECK_PREFIXES = {
    "fp": (
        ("bottleneck_layer.encoder.", "encoder."),
        ("bottleneck_layer.decoder.", "decoder."),
        ("bottleneck_layer.entropy_bottleneck.", "codec.entropy_bottleneck."),
    ),
    "mshp": (
        ("bottleneck_layer.g_a.", "encoder."),
        ("bottleneck_layer.g_s.", "decoder."),
        ("bottleneck_layer.h_a.", "codec.h_a."),
        ("bottleneck_layer.h_s.", "codec.h_s."),
        ("bottleneck_layer.entropy_bottleneck.", "codec.entropy_bottleneck."),
        ("bottleneck_layer.gaussian_conditional.", "codec.gaussian_conditional."),
    ),
}
# Backbone prefixes (sc2bench / torchvision -> ours), per family.
_TAIL_PREFIXES = {
    "resnet": tuple((f"{n}.", f"backbone_tail.{n}.") for n in ("layer2", "layer3", "layer4", "fc")),
    "regnet": (
        ("head.fc.", "backbone_tail.fc."),
        ("fc.", "backbone_tail.fc."),
        *((f"trunk_output.block{n}.", f"backbone_tail.trunk_output.block{n}.") for n in (2, 3, 4)),
    ),
}
# Parts of the full backbone that the bottleneck replaces (skipped by the torchvision loader).
_HEAD_PREFIXES = {
    "resnet": ("conv1.", "bn1.", "layer1."),
    "regnet": ("stem.", "trunk_output.block1.", "s1."),
}
# timm RegNet block sub-modules -> torchvision's.
_TIMM_BLOCK = (
    ("conv1.conv.", "f.a.0."),
    ("conv1.bn.", "f.a.1."),
    ("conv2.conv.", "f.b.0."),
    ("conv2.bn.", "f.b.1."),
    ("se.fc1.", "f.se.fc1."),
    ("se.conv_reduce.", "f.se.fc1."),
    ("se.fc2.", "f.se.fc2."),
    ("se.conv_expand.", "f.se.fc2."),
    ("conv3.conv.", "f.c.0."),
    ("conv3.bn.", "f.c.1."),
    ("downsample.conv.", "proj.0."),
    ("downsample.bn.", "proj.1."),
)
_TIMM_STAGE = re.compile(r"^s(\d+)\.b(\d+)\.(.*)$")
_TV_STAGE = re.compile(r"^backbone_tail\.trunk_output\.block(\d+)\.block\d+-(\d+)\.(.*)$")
_OLD_DENSITY = re.compile(r"^(.*entropy_bottleneck\.)_(matrix|bias|factor)(\d+)$")
_NEW_DENSITY = re.compile(r"^(.*entropy_bottleneck\.)(matrices|biases|factors)\.(\d+)$")
_OLD_TO_NEW = {"matrix": "matrices", "bias": "biases", "factor": "factors"}
_NEW_TO_OLD = {v: k for k, v in _OLD_TO_NEW.items()}
# Constant buffers (CompressAI's bounds, reparametrisation offsets and density targets;
# BatchNorm's step counter, absent from old torchvision files): taken from the file when
# present, from a fresh model otherwise.
_CONSTANT_SUFFIXES = (".bound", ".pedestal", ".target", ".scale_bound", ".num_batches_tracked")


def _allow_namespace() -> contextlib.AbstractContextManager:
    """Let the restricted unpickler build ``argparse.Namespace`` (plain attributes, no code)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return safe_globals([argparse.Namespace]) if safe_globals else contextlib.nullcontext()


def _compressai_uses_lists() -> bool:
    return hasattr(EntropyBottleneck(1), "matrices")


# ---------------------------------------------------------------------- reading
def read_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Tensor]:
    """A flat ``{name: tensor}`` from a safetensors file or (with ``allow_pickle``) a torch file.

    Unwraps ``{"model": ...}`` and ``{"state_dict": ...}`` and a ``module.`` prefix
    (DistributedDataParallel). Raises ``CheckpointError`` when the file is missing, unreadable,
    pickle-based without ``allow_pickle``, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        try:
            state: object = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    else:
        if not allow_pickle:
            raise CheckpointError(
                f"{path.name} is a pickle-based torch file: loading it can run code. Pass "
                "allow_pickle=True (CLI: --allow-pickle) only for files you trust, or convert it "
                "to .safetensors"
            )
        try:
            # sc2bench/torchdistill store the run's argparse.Namespace next to the weights.
            with _allow_namespace():
                state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as exc:
            raise CheckpointError(
                f"{path.name} could not be read with torch's restricted unpickler "
                f"(weights_only=True): {str(exc).splitlines()[0]}. Re-save just its state dict "
                "(torch.save(ckpt['model'], ...)) or convert it to .safetensors"
            ) from exc
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path.name} holds no state dict")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{path.name} holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


# ---------------------------------------------------------------- key mapping
def _density_name(key: str, lists: bool) -> str:
    """Spell an EntropyBottleneck parameter the way the installed CompressAI does."""
    if lists:
        m = _OLD_DENSITY.match(key)
        return f"{m[1]}{_OLD_TO_NEW[m[2]]}.{m[3]}" if m else key
    m = _NEW_DENSITY.match(key)
    return f"{m[1]}_{_NEW_TO_OLD[m[2]]}{m[3]}" if m else key


def _replace_prefix(key: str, pairs) -> str | None:
    for src, dst in pairs:
        if key.startswith(src):
            return dst + key[len(src) :]
    return None


def _timm_regnet_key(key: str) -> str | None:
    m = _TIMM_STAGE.match(key)
    if not m:
        return None
    stage, block, rest = int(m[1]), int(m[2]) - 1, m[3]
    sub = _replace_prefix(rest, _TIMM_BLOCK)
    if sub is None:
        return None
    return f"backbone_tail.trunk_output.block{stage}.block{stage}-{block}.{sub}"


def _to_ours(key: str, family: str, prior: str | None, lists: bool) -> str:
    """Our name for a sc2bench / torchvision / timm key (unknown keys are returned unchanged)."""
    if prior is not None and key.startswith("bottleneck_layer."):
        mapped = _replace_prefix(key, _BOTTLENECK_PREFIXES[prior])
        return _density_name(mapped, lists) if mapped else key
    if family == "regnet":
        mapped = _timm_regnet_key(key)
        if mapped:
            return mapped
    return _replace_prefix(key, _TAIL_PREFIXES[family]) or key


def _to_sc2bench(key: str, family: str, prior: str, legacy_names: bool) -> str:
    for src, dst in _BOTTLENECK_PREFIXES[prior]:
        if key.startswith(dst):
            return _density_name(src + key[len(dst) :], lists=not legacy_names)
    if family == "regnet":
        m = _TV_STAGE.match(key)
        if m:
            stage, block, rest = int(m[1]), int(m[2]) + 1, m[3]
            for timm_sub, tv_sub in _TIMM_BLOCK:
                if rest.startswith(tv_sub):  # the first match is timm's current name
                    return f"s{stage}.b{block}.{timm_sub}{rest[len(tv_sub) :]}"
        if key.startswith("backbone_tail.fc."):
            return "head.fc." + key[len("backbone_tail.fc.") :]
    if key.startswith("backbone_tail."):
        return key[len("backbone_tail.") :]
    raise ValueError(f"no sc2bench name for {key!r}")


def _family(model: SplitClassifier) -> str:
    try:
        return ARCHS[canonical_arch(model.spec.arch)].family
    except ValueError:
        raise CheckpointError(
            f"{model.spec.arch} is not an ImageNet architecture; sc2bench and torchvision "
            f"weights fit only {', '.join(ARCHS)}"
        ) from None


def sc2bench_state_dict(model: SplitClassifier, *, legacy_names: bool = False) -> dict[str, Tensor]:
    """``model``'s full state dict in sc2bench's key layout (export, and tests of the importer).

    RegNet keys use timm's names (sc2bench builds RegNets with timm). ``legacy_names`` spells
    the factorized density's parameters like CompressAI < 1.2 (``_matrix0``); by default they
    are spelled like CompressAI 1.2 (``matrices.0``). Coder tables are included, as in
    sc2bench's checkpoints.
    """
    family = _family(model)
    return {
        _to_sc2bench(k, family, model.spec.prior, legacy_names): v.detach().clone()
        for k, v in model.state_dict().items()
    }


# --------------------------------------------------------------------- loaders
def _check_prior(state: dict[str, Tensor], prior: str, source: str) -> None:
    has_hyper = any(k.startswith(("bottleneck_layer.h_a.", "bottleneck_layer.g_a.")) for k in state)
    has_fp = any(k.startswith("bottleneck_layer.encoder.") for k in state)
    found = "mshp" if has_hyper else "fp" if has_fp else None
    if found is not None and found != prior:
        raise CheckpointError(
            f"{source} is a sc2bench {found} (entropy model) checkpoint, but prior {prior!r} was "
            f"asked for; load it with prior={found!r}"
        )


def load_sc2bench_checkpoint(
    path: str | Path,
    arch: str,
    prior: str,
    *,
    allow_pickle: bool = False,
    num_classes: int | None = None,
    **options: int,
) -> SplitClassifier:
    """Load a sc2bench entropic-student checkpoint into a new split model, ready to code.

    Args:
        path: ``.safetensors`` state dict, or a torch file (``{"model": state_dict, ...}``,
            sc2bench's format) when ``allow_pickle`` is true.
        arch: ``"resnet50"``, ``"resnet101"`` or ``"regnety6.4gf"``.
        prior: ``"fp"`` or ``"mshp"``.
        allow_pickle: read pickle-based torch files (restricted unpickler); only for files
            you trust.
        num_classes: classes of the classifier; inferred from the checkpoint's ``fc`` when None.
        options: builder options (``bottleneck_channels``, ``hyper_channels``).

    Returns the model in eval mode with coder tables built. Raises ``CheckpointError`` (one
    message naming missing, unexpected or misshapen keys) when the file is of another
    architecture or entropy model.
    """
    path = Path(path)
    name = canonical_arch(arch)
    family = ARCHS[name].family
    raw = read_state_dict(path, allow_pickle=allow_pickle)
    _check_prior(raw, prior, path.name)
    lists = _compressai_uses_lists()
    state = {_to_ours(k, family, prior, lists): v for k, v in raw.items()}
    state = {k: v for k, v in state.items() if not k.endswith(CODER_TABLE_SUFFIXES)}
    if num_classes is None:
        fc = state.get("backbone_tail.fc.weight")
        num_classes = int(fc.shape[0]) if fc is not None and fc.dim() == 2 else IMAGENET_CLASSES
    model = build_imagenet(name, prior, num_classes, **options)
    for k, v in model.learned_state().items():
        if k not in state and k.endswith(_CONSTANT_SUFFIXES):
            state[k] = v.clone()
    load_learned_state(model, state, source=path.name)
    model.eval()
    model.prepare_coding()
    return model


def load_torchvision_weights(
    model: SplitClassifier, path: str | Path, *, allow_pickle: bool = False
) -> list[str]:
    """Load a pretrained classifier's weights into the backbone after the split.

    The file is a torchvision classification state dict of the same architecture (e.g.
    ``resnet50-0676ba61.pth``, or a safetensors export). For RegNetY-6.4GF, which torchvision
    does not ship, a timm ``regnety_064`` state dict is read too (``s2.b1.conv1.conv.weight``
    ...). The stem and first stage in the file are skipped (the bottleneck replaces them) and
    the bottleneck stays as it is, to be trained. Coder tables and the fingerprint are rebuilt.

    Returns the names (in ``model``'s state dict) of the tensors loaded. Raises
    ``CheckpointError`` naming what does not fit when the file is of another architecture or
    class count; nothing is loaded then.
    """
    path = Path(path)
    family = _family(model)
    raw = read_state_dict(path, allow_pickle=allow_pickle)
    state = {
        _to_ours(k, family, None, True): v
        for k, v in raw.items()
        if not k.startswith(_HEAD_PREFIXES[family])
    }
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("backbone_tail.")}
    for k in expected:
        if k not in state and k.endswith(".num_batches_tracked"):
            state[k] = expected[k].clone()
    mismatch = state_mismatch(expected, state)
    if mismatch is not None:
        detail, wrong = mismatch
        hint = ""
        if "backbone_tail.fc.weight" in wrong:
            hint = f"; build the model with num_classes={state['backbone_tail.fc.weight'].shape[0]}"
        raise CheckpointError(
            f"{path.name} does not fit the backbone of a {model.spec.arch} model: "
            + detail
            + f". Pass the weights of a {model.spec.arch} classifier{hint}"
        )
    model.load_state_dict(state, strict=False)
    model.prepare_coding()
    return sorted(state)
