"""Learned-compression transforms: analysis g_a, synthesis g_s and the hyperprior's h_a / h_s.

They follow the entropic-student bottlenecks of sc2bench (GDN-normalised strided convolutions),
scaled to the size of the model they sit in.
"""

from __future__ import annotations

from compressai.layers import GDN
from torch import nn


def analysis_transform(in_channels: int, hidden: int, latent: int) -> nn.Sequential:
    """g_a: image (B, in, H, W) -> latent (B, latent, H/4, W/4) with two stride-2 5x5 convs."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 5, stride=2, padding=2),
        GDN(hidden),
        nn.Conv2d(hidden, hidden, 5, stride=2, padding=2),
        GDN(hidden),
        nn.Conv2d(hidden, latent, 3, stride=1, padding=1),
    )


def synthesis_transform(latent: int, hidden: int, out_channels: int) -> nn.Sequential:
    """g_s: latent (B, latent, h, w) -> features (B, out, h, w) for the rest of the backbone."""
    return nn.Sequential(
        nn.Conv2d(latent, hidden, 3, padding=1),
        GDN(hidden, inverse=True),
        nn.Conv2d(hidden, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def hyper_analysis(latent: int, hyper: int) -> nn.Sequential:
    """h_a: latent (B, latent, h, w) -> hyper-latent (B, hyper, ceil(h/4), ceil(w/4))."""
    return nn.Sequential(
        nn.Conv2d(latent, latent, 3, padding=1),
        nn.LeakyReLU(inplace=True),
        nn.Conv2d(latent, latent, 5, stride=2, padding=2),
        nn.LeakyReLU(inplace=True),
        nn.Conv2d(latent, hyper, 5, stride=2, padding=2),
    )


def hyper_synthesis(hyper: int, latent: int) -> nn.Sequential:
    """h_s: hyper-latent (B, hyper, hz, wz) -> scales and means (B, 2*latent, 4hz, 4wz)."""
    return nn.Sequential(
        nn.ConvTranspose2d(hyper, latent, 5, stride=2, padding=2, output_padding=1),
        nn.LeakyReLU(inplace=True),
        nn.ConvTranspose2d(latent, latent * 3 // 2, 5, stride=2, padding=2, output_padding=1),
        nn.LeakyReLU(inplace=True),
        nn.Conv2d(latent * 3 // 2, latent * 2, 3, padding=1),
    )
