"""The software's version, in a module of its own so that every stage may name it (the
SR's device, the CLI) without importing the package's ``__init__``."""

__version__ = "0.1.0"
