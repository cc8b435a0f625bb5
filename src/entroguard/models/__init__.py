"""Split classifiers: the head codes its latent into bytes, the tail decodes and classifies."""

import entroguard.quiet_imports  # noqa: F401  (CompressAI first, without its warning)
from entroguard.models.registry import architectures, build_from_spec, build_model
from entroguard.models.split import EncodedBatch, SplitClassifier, SplitOutput, SplitSpec

__all__ = [
    "EncodedBatch",
    "SplitClassifier",
    "SplitOutput",
    "SplitSpec",
    "architectures",
    "build_from_spec",
    "build_model",
]
