"""Fashion Hub: text-to-image product recommendations for clothing shops."""

__version__ = "0.3.0"
