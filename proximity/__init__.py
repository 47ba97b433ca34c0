"""proximity: domain proximity for language-model midtraining.

The pipeline reads top to bottom: data (`proximity.data`) -> token statistics
(`proximity.stats`) -> similarity and proximity advantage (`proximity.similarity`).
For notebooks, `proximity.similarity_matrix` and `proximity.proximity_advantage` return
DataFrames with the command line's numbers (`proximity.api`).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "proximity_advantage", "similarity_matrix"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: `import proximity` (every command does) must not import pandas,
    # tokenizers and the statistics code that the API needs.
    if name in ("similarity_matrix", "proximity_advantage"):
        from proximity import api

        return getattr(api, name)
    raise AttributeError(f"module 'proximity' has no attribute {name!r}")
