"""Causal attention without a mask, in eager mode and under torch.compile alike.

Transformers' SDPA path builds its mask per forward (`masking_utils.create_causal_mask`): from
the position ids it looks for packed sequences, which in eager mode turns a device tensor into
a Python bool (a host-device sync on every forward pass) and under torch.compile cannot be
decided while tracing, so a compiled model gets a (B, 1, T, T) mask and `is_causal=False` in
every layer: no Flash kernel, no skipping of the masked blocks.

The loop never passes an attention mask (packed pretraining rows are one causal stream; SFT
rows are right-padded, and padding after the last real token changes no real position under
causal attention), so it needs only plain causal attention. `use_causal_attention` registers it
as an attention implementation of its own: transformers then builds no mask at all (it has
no mask function for this name) and every layer calls SDPA with `attn_mask=None,
is_causal=True`, in eager and compiled runs. The setting lives on the config object only:
`save_pretrained` does not write it, so a saved checkpoint loads with the default "sdpa".
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from proximity.errors import ProximityError

CAUSAL = "proximity_causal"  # an implementation name transformers has no mask function for


def causal_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Transformers' SDPA attention with is_causal=True and no mask, always."""
    if attention_mask is not None:
        raise ProximityError(
            "causal-only attention got an attention mask; the training loop passes none "
            "(use the model's default attn_implementation='sdpa' for masked inputs)"
        )
    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)


AttentionInterface.register(CAUSAL, causal_attention)


def use_causal_attention(model: torch.nn.Module) -> None:
    """Switch a transformers model (in place) to mask-free causal SDPA attention."""
    model.set_attn_implementation(CAUSAL)
