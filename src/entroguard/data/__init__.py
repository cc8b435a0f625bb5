"""Datasets as in-memory image sets that yield float batches in [0, 1]."""

from entroguard.data.imageset import ImageSet
from entroguard.data.registry import DATASETS, load_dataset

__all__ = ["ImageSet", "DATASETS", "load_dataset"]
