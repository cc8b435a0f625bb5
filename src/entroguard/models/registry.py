"""Build any split model from its spec or its architecture name."""

from __future__ import annotations

from collections.abc import Callable

from entroguard.models.small import SMALL_TAILS, build_small
from entroguard.models.split import SplitClassifier, SplitSpec

Builder = Callable[..., SplitClassifier]
BUILDERS: dict[str, Builder] = {arch: build_small for arch in SMALL_TAILS}


def register(arch: str, builder: Builder) -> None:
    """Add a builder ``builder(arch, prior, num_classes, **options) -> SplitClassifier``."""
    BUILDERS[arch] = builder


def architectures() -> list[str]:
    """Names of every architecture that can be built."""
    _load_optional_builders()
    return sorted(BUILDERS)


def build_model(arch: str, prior: str, num_classes: int = 10, **options) -> SplitClassifier:
    """A freshly initialised split model of ``arch`` with entropy model ``prior``."""
    _load_optional_builders()
    if arch not in BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(BUILDERS)}")
    return BUILDERS[arch](arch, prior, num_classes, **options)


def build_from_spec(spec: SplitSpec) -> SplitClassifier:
    """Rebuild the (untrained) model a checkpoint's spec describes."""
    return build_model(spec.arch, spec.prior, spec.num_classes, **spec.options)


def _load_optional_builders() -> None:
    try:  # the ImageNet builders register themselves on import
        import entroguard.models.imagenet  # noqa: F401
    except ImportError:
        pass
