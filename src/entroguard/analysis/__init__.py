"""Where the bits go: rate maps against total-variation maps, the rate of DCT bands, and how
threats move image energy between DCT bands."""

from entroguard.analysis.bands import band_energy, band_labels, band_masks, energy_change
from entroguard.analysis.frequency import band_filtered, spearman_per_image, tv_map
from entroguard.analysis.study import analyze_model
from entroguard.analysis.threat_bands import default_threats, threat_bands

__all__ = [
    "analyze_model",
    "band_energy",
    "band_filtered",
    "band_labels",
    "band_masks",
    "default_threats",
    "energy_change",
    "spearman_per_image",
    "threat_bands",
    "tv_map",
]
