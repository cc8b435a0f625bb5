"""Where the bits go: rate maps against total-variation maps, and the rate of DCT bands."""

from entroguard.analysis.frequency import band_filtered, spearman_per_image, tv_map
from entroguard.analysis.study import analyze_model

__all__ = ["analyze_model", "band_filtered", "spearman_per_image", "tv_map"]
