"""The package version, one layer below everything that records it in provenance."""

__version__ = "0.1.0"
