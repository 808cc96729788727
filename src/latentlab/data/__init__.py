"""Datasets named by spec strings (see `load_dataset`), in the pixel convention of `pixels`."""

from latentlab.data.base import ArrayDataset, Batch, LatentlabDataset, collate
from latentlab.data.folder import CorruptImage, ImageFolder
from latentlab.data.info import describe, format_description
from latentlab.data.latent_cache import LatentCache
from latentlab.data.latent_cache_writer import write_latent_cache
from latentlab.data.load import LOADERS, load_dataset
from latentlab.data.spec import KINDS, DatasetSpec, infer_kind, parse_spec
from latentlab.data.splits import SPLITS

__all__ = [
    "KINDS",
    "LOADERS",
    "SPLITS",
    "ArrayDataset",
    "Batch",
    "CorruptImage",
    "DatasetSpec",
    "ImageFolder",
    "LatentCache",
    "LatentlabDataset",
    "collate",
    "describe",
    "format_description",
    "infer_kind",
    "load_dataset",
    "parse_spec",
    "write_latent_cache",
]
