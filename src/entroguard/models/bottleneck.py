"""Build the codec (entropy model or fixed-rate quantiser) of a split model from its prior name."""

from __future__ import annotations

from entroguard.codec import AffineUint8, FactorizedPrior, LatentCodec, MeanScaleHyperprior
from entroguard.models.transforms import hyper_analysis, hyper_synthesis

PRIOR_NAMES = ("fp", "mshp", "q8")


def build_codec(prior: str, latent_channels: int, hyper_channels: int) -> LatentCodec:
    """A factorized prior (``"fp"``), a mean-scale hyperprior (``"mshp"``) or BottleFit's
    fixed-rate 8-bit quantiser (``"q8"``) for the latent."""
    if prior == "q8":
        return AffineUint8(latent_channels)
    if prior == "fp":
        return FactorizedPrior(latent_channels)
    if prior == "mshp":
        return MeanScaleHyperprior(
            latent_channels,
            hyper_channels,
            hyper_analysis(latent_channels, hyper_channels),
            hyper_synthesis(hyper_channels, latent_channels),
        )
    raise ValueError(f"unknown prior {prior!r}: choose one of {', '.join(PRIOR_NAMES)}")
