"""Per-layer linear CKA between a base model and others on held-out text (figure 7).

Linear CKA (Kornblith et al., 2019, "Similarity of Neural Network Representations
Revisited", eq. for the linear kernel): with column-centred activations X (n × p) and
Y (n × q) of the same n tokens, CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F · ‖YᵀY‖_F). It is 1 for
identical representations and invariant to orthogonal transforms and isotropic scaling,
so it asks whether two layers encode the same geometry, not the same coordinates.

The text is the trainer's own held-out split of `--data` (proximity.training.data.tokenized,
with the same n_docs / max_chars / val_fraction / seed as the grid's data settings), cut into
windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer

from proximity.analysis.results import load_grid
from proximity.cache import cache_dir
from proximity.errors import ProximityError
from proximity.outputs import portable_path
from proximity.tokenizer import load_tokenizer
from proximity.training.checkpoint import resolve_checkpoint
from proximity.training.data.tokenized import TokenizedDataset, tokenize_dataset
from proximity.training.phases import SPLIT_SEED


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two activation matrices over the same rows (tokens)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same rows: {x.shape[0]} vs {y.shape[0]}")
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x, "fro") ** 2
    norms = np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    return float(cross / norms) if norms > 0 else float("nan")


def model_folder(path: str | Path) -> Path:
    """A checkpoint, a run/node folder (its latest checkpoint) or a Hugging Face model folder."""
    checkpoint = resolve_checkpoint(path)
    if checkpoint is not None:
        return checkpoint / "model"
    path = Path(path)
    if (path / "config.json").exists():
        return path
    raise ProximityError(
        f"{path}: not a checkpoint, a run folder with checkpoints/ or a model folder (config.json)"
    )


def load_model(folder: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM  # ~2 s; only when a model is compared
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load would bury the per-layer lines
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    return model.eval()


def model_tokenizer(folder: Path, data_dir: Path | None = None) -> Tokenizer:
    """The tokenizer saved with the model (our checkpoints keep tokenizer.json), else Pythia's."""
    own = folder / "tokenizer.json"
    return load_tokenizer(str(own) if own.exists() else "pythia", data_dir)


def held_out_windows(
    data: TokenizedDataset, spec: str, *, n_windows: int, seq_len: int
) -> torch.Tensor:
    """n_windows × seq_len token ids from `data`'s held-out split, which training never saw."""
    usable = len(data.val) // seq_len
    if usable == 0:
        raise ProximityError(
            f"--data {spec}: its held-out split has {len(data.val)} tokens, fewer than one "
            f"window of --seq-len {seq_len}; use more --n-docs or a shorter --seq-len"
        )
    count = min(n_windows, usable)
    ids = np.asarray(data.val[: count * seq_len], dtype=np.int64).reshape(count, seq_len)
    return torch.from_numpy(ids)


@torch.no_grad()
def layer_activations(model: torch.nn.Module, windows: torch.Tensor, batch: int = 8) -> list:
    """Hidden states of every layer (0 = embeddings), each tokens × width, in float64."""
    per_layer: list[list[np.ndarray]] = []
    for start in range(0, len(windows), batch):
        out = model(input_ids=windows[start : start + batch], output_hidden_states=True)
        for i, hidden in enumerate(out.hidden_states):
            if len(per_layer) <= i:
                per_layer.append([])
            per_layer[i].append(hidden.reshape(-1, hidden.shape[-1]).double().numpy())
    return [np.concatenate(chunks) for chunks in per_layer]


def cka_by_layer(base: list[np.ndarray], other: list[np.ndarray]) -> list[float]:
    if len(base) != len(other):
        raise ProximityError(
            f"the models have {len(base) - 1} and {len(other) - 1} layers; per-layer CKA "
            "compares models of one architecture (a base and its midtrained branch)"
        )
    return [linear_cka(a, b) for a, b in zip(base, other, strict=True)]


def compare_models(
    base: str | Path,
    others: list[str | Path],
    *,
    data: str = "c4",
    n_windows: int = 32,
    seq_len: int = 128,
    data_dir: Path | None = None,
    n_docs: int | None = None,
    max_chars: int | None = None,
    val_fraction: float = 0.05,
    labels: list[str] | None = None,
) -> pd.DataFrame:
    """Rows (model, layer, cka) for each model in `others` against `base`."""
    base_folder = model_folder(base)
    tokenizer = model_tokenizer(base_folder, data_dir)
    held_out = tokenize_dataset(
        data,
        tokenizer,
        cache_dir=cache_dir() / "tokens",
        data_dir=data_dir,
        n_docs=n_docs,
        max_chars=max_chars,
        val_fraction=val_fraction,
        seed=SPLIT_SEED,
        progress=False,
    )
    windows = held_out_windows(held_out, data, n_windows=n_windows, seq_len=seq_len)
    reference = layer_activations(load_model(base_folder), windows)
    rows = []
    for k, other in enumerate(others):
        folder = model_folder(other)
        name = labels[k] if labels else Path(other).name
        values = cka_by_layer(reference, layer_activations(load_model(folder), windows))
        rows += [
            {
                "model": name,
                "path": portable_path(other),
                "layer": i,
                "cka": v,
                "tokens": int(windows.numel()),
                "data": data,
            }
            for i, v in enumerate(values)
        ]
    return pd.DataFrame(rows)


def grid_models(
    root: str | Path, model: str | None = None
) -> tuple[Path, list[tuple[str, Path]], dict]:
    """The base (the pretraining node, which is the control's end) and every main midtraining
    and CPT branch of one model and the first seed of a grid, labelled for the figure, and
    the grid's `data` settings (so the held-out split is the one training held out)."""
    grid = load_grid(root)
    rows = grid.results[~grid.results["ablation"]]
    model = model or str(rows["model"].iloc[0])
    rows = rows[(rows["model"] == model) & (rows["seed"] == rows["seed"].min())]
    control = rows[rows["branch_kind"] == "control"]
    if control.empty:
        raise ProximityError(f"{grid.root}: no control run for model {model}; give BASE OTHER")
    nodes = grid.root / "nodes"
    base = nodes / str(control["branch_node_id"].iloc[0])
    others = []
    branches = rows[rows["branch_kind"] != "control"].drop_duplicates("branch_node_id")
    for row in branches.sort_values(["branch_kind", "mixture_spec"]).itertuples():
        kind = "CPT" if row.branch_kind == "cpt" else "midtrain"
        others.append((f"{kind} {row.mixture_spec}", nodes / str(row.branch_node_id)))
    data = grid.config.get("data") if isinstance(grid.config.get("data"), dict) else {}
    return base, others, data
