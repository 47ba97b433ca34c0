"""proximity: domain proximity for language-model midtraining.

The pipeline reads top to bottom: data (`proximity.data`) -> token statistics
(`proximity.stats`) -> similarity and proximity advantage (`proximity.similarity`).
"""

__version__ = "0.1.0"
