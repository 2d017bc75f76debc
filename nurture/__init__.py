"""nurture: a marketing-automation nurturing engine."""

__version__ = "0.1.0"
