"""Entropy models that turn a latent into real byte strings and back."""

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
