"""The similarity protocol as one value: the metric, how each dataset is sampled and counted,
how a mixture is compared, and the bootstrap.

`SimilaritySettings` is what `proximity similarity` and `proximity advantage`, the notebook
API (`proximity.similarity_matrix`, `proximity.proximity_advantage`) and analysis/ hand to
`proximity.similarity`. It is checked once, when it is made (its parts, `StatsOptions` and
`Bootstrap`, check themselves the same way), and every error names the flag to change.
`SimilaritySettings.from_flags` is what the command-line flags mean; the API's keywords are
the same names with the same defaults, so a command and its function give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from proximity.bootstrap import Bootstrap
from proximity.errors import ProximityError
from proximity.metrics import METRICS, Metric, get_metric
from proximity.stats import PAPER_MAX_CHARS, PAPER_MAX_TOKENS, PAPER_N_DOCS, StatsOptions

MixtureMode = Literal["expected", "resample"]
MIXTURE_MODES: tuple[str, ...] = ("expected", "resample")


@dataclass(frozen=True)
class SimilaritySettings:
    """What a similarity or a proximity advantage is measured with; the paper's by default."""

    metric: Metric = METRICS["paper"]
    """The similarity metric (--metric)."""
    options: StatsOptions = field(default_factory=StatsOptions)
    """How each dataset is sampled and counted, as given; `counting` completes it."""
    mixture: MixtureMode = "expected"
    """How a mixture is compared (--mixture): `expected` (exact token frequencies, the
    vocabulary expected at a matched budget) or `resample` (the authors' document mixing)."""
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    """Intervals by resampling documents (--bootstrap ...); off by default."""

    def __post_init__(self) -> None:
        if self.mixture not in MIXTURE_MODES:
            raise ProximityError(
                f"--mixture must be one of {', '.join(MIXTURE_MODES)}, got {self.mixture!r}"
            )

    @property
    def counting(self) -> StatsOptions:
        """`options` with what the metric and the comparison need: bigram counts for an
        n-gram metric (order 2 unless given), per-document counts for a bootstrap or for
        `resample` (both draw documents)."""
        options = self.options
        if self.metric.uses == "ngram" and not options.ngram_order:
            options = replace(options, ngram_order=2)
        if self.bootstrap.n_resamples or self.mixture == "resample":
            options = replace(options, per_document=True)
        return options

    @classmethod
    def from_flags(
        cls,
        metric: str = "paper",
        n_docs: int | None = None,
        sample: str = "first",
        seed: int = 0,
        max_chars: int = PAPER_MAX_CHARS,
        max_tokens: int = PAPER_MAX_TOKENS,
        equal_tokens: int | None = None,
        ngram_order: int = 0,
        ngram_buckets: int = 2**20,
        mixture: str = "expected",
        bootstrap: int = 0,
        bootstrap_seed: int = 0,
        ci_level: float = 0.95,
        ci_method: str = "basic",
    ) -> SimilaritySettings:
        """The settings that the flags of `similarity` and `advantage` mean (each keyword is
        its flag: `n_docs` is `--n-docs`). `n_docs` None reads the paper's 1,000 documents,
        or as many as `equal_tokens` needs when the sample is the first documents; 0 turns
        `max_chars` and `max_tokens` off."""
        chosen = get_metric(metric)
        if n_docs is None and (equal_tokens is None or sample == "random"):
            n_docs = PAPER_N_DOCS
        options = StatsOptions(
            n_docs=n_docs,
            sample=sample,  # type: ignore[arg-type]  # checked by StatsOptions
            seed=seed,
            max_chars=max_chars or None,
            max_tokens=max_tokens or None,
            token_budget=equal_tokens,
            ngram_order=ngram_order,
            ngram_buckets=ngram_buckets,
        )
        return cls(
            metric=chosen,
            options=options,
            mixture=mixture,  # type: ignore[arg-type]  # checked in __post_init__
            bootstrap=Bootstrap(bootstrap, bootstrap_seed, ci_level, ci_method),  # type: ignore[arg-type]
        )


PAPER_SETTINGS = SimilaritySettings()
"""The paper's protocol: `paper` metric, 1,000 documents of up to 512 tokens, no bootstrap."""
