"""Roost: a self-hosted platform for machine learning on edge devices."""

__version__ = "0.1.0"
# The Greengrass nucleus version Roost reports to components (GGC_VERSION): the IPC protocol level
# it speaks. Components written for Greengrass read it to pick features.
GGC_COMPAT_VERSION = "2.12.0"
