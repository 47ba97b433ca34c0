"""Model presets: the Pythia shapes, plus micro shapes small enough to train on a laptop CPU.

Every preset becomes a `transformers.GPTNeoXConfig`, so a model we train saves and loads with
`GPTNeoXForCausalLM.save_pretrained` / `from_pretrained` exactly like the real Pythia checkpoints
(EleutherAI/pythia-*; shapes from their `config.json` files and Biderman et al. 2023, Table 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GPTNeoXConfig

from proximity.errors import ProximityError
from proximity.training.memory import ModelShape


@dataclass(frozen=True)
class Shape:
    """The parts of a GPT-NeoX config that differ between sizes."""

    layers: int
    hidden: int
    heads: int

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden


PRESETS: dict[str, Shape] = {
    # Pythia (all: parallel residual, rotary on 25% of each head, untied embeddings).
    "14m": Shape(layers=6, hidden=128, heads=4),
    "31m": Shape(layers=6, hidden=256, heads=8),
    "70m": Shape(layers=6, hidden=512, heads=8),
    "160m": Shape(layers=12, hidden=768, heads=12),
    "410m": Shape(layers=24, hidden=1024, heads=16),
    "1b": Shape(layers=16, hidden=2048, heads=8),
    # Micro shapes for tests and the CPU grid.
    "micro-2l-64": Shape(layers=2, hidden=64, heads=2),
    "micro-2l-128": Shape(layers=2, hidden=128, heads=4),
    "micro-4l-128": Shape(layers=4, hidden=128, heads=4),
    "micro-4l-256": Shape(layers=4, hidden=256, heads=4),
}


def padded_vocab_size(n_tokens: int, multiple: int = 128) -> int:
    """Round the tokenizer's vocabulary up so the output matmul tiles well on GPUs.

    Pythia does the same: 50,277 tokens -> 50,304 rows.
    """
    return -(-n_tokens // multiple) * multiple


def model_config(
    preset: str, *, vocab_size: int, max_position_embeddings: int = 2048, **overrides
) -> GPTNeoXConfig:
    """The `GPTNeoXConfig` of a preset, for a tokenizer with `vocab_size` tokens (padded here)."""
    if preset not in PRESETS:
        raise ProximityError(
            f"unknown model preset {preset!r} (model.preset); choose one of {', '.join(PRESETS)}"
        )
    shape = PRESETS[preset]
    return GPTNeoXConfig(
        vocab_size=padded_vocab_size(vocab_size),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        hidden_act="gelu",
        max_position_embeddings=max_position_embeddings,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        use_cache=False,
        attn_implementation="sdpa",  # PyTorch's fused attention (flash/memory-efficient kernels)
        **overrides,
    )


def count_parameters(config: GPTNeoXConfig, *, non_embedding: bool = False) -> int:
    """Parameter count from the shape alone (matches `sum(p.numel())` of the built model)."""
    h, n_layers, v = config.hidden_size, config.num_hidden_layers, config.vocab_size
    inter = config.intermediate_size
    per_layer = (
        4 * h  # two layer norms
        + 3 * h * h
        + 3 * h  # fused qkv
        + h * h
        + h  # attention output
        + h * inter
        + inter  # mlp up
        + inter * h
        + h  # mlp down
    )
    total = n_layers * per_layer + 2 * h  # + final layer norm
    if not non_embedding:
        total += 2 * v * h  # input embedding + untied output head
    return total


def flops_per_token(config: GPTNeoXConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), as in PaLM appendix B / nanoGPT.

    6 per parameter for the matmuls plus 12·layers·hidden·seq_len for attention scores.
    The input embedding is a lookup, not a matmul, so it is left out.
    """
    n = count_parameters(config) - config.vocab_size * config.hidden_size
    return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def memory_shape(config: GPTNeoXConfig) -> ModelShape:
    """What training/memory.py's estimate needs of a model config."""
    return ModelShape(
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        heads=config.num_attention_heads,
        vocab=config.vocab_size,
        parameters=count_parameters(config),
    )
