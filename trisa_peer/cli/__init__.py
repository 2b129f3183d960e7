"""Command-line entry points (``trisa-peer`` and ``sectigo``). Nothing imports this package."""
