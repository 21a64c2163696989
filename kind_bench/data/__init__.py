"""Datasets: the embedded digits, any torchvision ImageFolder, task splits and domain shifts."""

from kind_bench.data.sources import FileSet, ImageSet, Prepared, load_prepared, load_source, prepare, prepared_path
from kind_bench.data.tasks import DOMAINS, ancestry_set, target_set

__all__ = [
    "DOMAINS", "FileSet", "ImageSet", "Prepared", "ancestry_set", "load_prepared", "load_source", "prepare",
    "prepared_path", "target_set",
]
