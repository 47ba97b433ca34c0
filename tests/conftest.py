"""Shared fixtures: where the real data lives, and a private cache per test session.

Tests that need `../shared/data` skip with a clear reason when it is absent; in CI it is
present beside the clone, so they run there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROXIMITY_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data); skip when it is not beside the repository."""
    if not (SHARED_DATA / "MANIFEST.md").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set PROXIMITY_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pythia_tokenizer_path(shared_data: Path) -> Path:
    return shared_data / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test session gets its own statistics/token cache so tests never see stale files."""
    cache = tmp_path_factory.getbasetemp() / "proximity-cache"
    monkeypatch.setenv("PROXIMITY_CACHE_DIR", str(cache))
    monkeypatch.delenv("PROXIMITY_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def tokenizer_file(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BPE tokenizer trained on the real C4 sample, once per session (read-only)."""
    from trainer_utils import train_tiny_tokenizer

    return train_tiny_tokenizer(shared_data, tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def pretrained(tokenizer_file: Path, shared_data: Path, tmp_path_factory) -> Path:
    """A 12-step pretraining run with a kept checkpoint at step 6 (a midtraining start point);
    one per module, so no module sees another's writes."""
    from trainer_utils import tiny_config

    from proximity.training.loop import train

    out = tmp_path_factory.mktemp("pretrain")
    result = train(tiny_config(tokenizer_file, shared_data, out, checkpoint={"steps": [6]}))
    assert result.finished and result.step == 12
    return out


@pytest.fixture
def saved_figures(monkeypatch) -> list:
    """Every matplotlib figure `proximity.analysis.plots.save` writes during the test, in order
    (the files are still written), so a test can read legends and axes back."""
    from proximity.analysis import plots  # matplotlib: only for the figure tests

    figures: list = []
    original = plots.save
    monkeypatch.setattr(
        plots, "save", lambda fig, path: (figures.append(fig), original(fig, path))[1]
    )
    return figures
