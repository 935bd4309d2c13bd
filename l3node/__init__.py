"""l3node: find the L3 vertebra slice in CT and put the answer in the PACS."""

__version__ = "0.1.0"
