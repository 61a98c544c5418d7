"""Data: dataset catalog, built-in datasets, mappers, samplers and loaders."""

from detlab.data.mappers.build import MAPPER_REGISTRY

__all__ = ["MAPPER_REGISTRY"]
