"""edgefleet: keep a city's safety sensors alive and honest."""

__version__ = "0.1.0"
