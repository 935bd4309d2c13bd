"""l3node: find the L3 vertebra slice in CT and put the answer in the PACS."""

from .version import __version__

__all__ = ["__version__"]
