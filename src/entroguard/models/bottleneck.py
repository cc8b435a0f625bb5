"""Build the codec (entropy model) of a split model from its prior name."""

from __future__ import annotations

from entroguard.codec import FactorizedPrior, LatentCodec, MeanScaleHyperprior
from entroguard.models.transforms import hyper_analysis, hyper_synthesis

PRIOR_NAMES = ("fp", "mshp")


def build_codec(prior: str, latent_channels: int, hyper_channels: int) -> LatentCodec:
    """A factorized prior (``"fp"``) or a mean-scale hyperprior (``"mshp"``) for the latent."""
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
