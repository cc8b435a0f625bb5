"""Entropy models that turn a latent into real byte strings and back."""

import entroguard.quiet_imports  # noqa: F401  (CompressAI first, without its warning)
from entroguard.codec.base import CodecOutput, LatentCodec, Quantization
from entroguard.codec.factorized import FactorizedPrior
from entroguard.codec.fixed_rate import AffineUint8
from entroguard.codec.hyperprior import MeanScaleHyperprior
from entroguard.codec.rans import BitstreamError

__all__ = [
    "AffineUint8",
    "BitstreamError",
    "CodecOutput",
    "LatentCodec",
    "Quantization",
    "FactorizedPrior",
    "MeanScaleHyperprior",
]
