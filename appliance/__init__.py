"""Fotostudio Appliance: a self-hosted platform for photography studios."""

__version__ = "0.1.0"
