"""Per-example validation losses: each row's sum against the full-logits loss of that row alone."""

from __future__ import annotations

import numpy as np
import torch
from transformers import GPTNeoXForCausalLM

from proximity.training.evaluate import EvalSet, example_losses
from proximity.training.losses import IGNORE_INDEX, token_loss_sum
from proximity.training.presets import model_config


def test_each_example_is_scored_alone_whatever_its_batch_holds():
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(model_config("micro-2l-64", vocab_size=97)).eval()
    inputs = torch.randint(0, 97, (5, 12))
    targets = torch.randint(0, 97, (5, 12))
    targets[1, :7] = IGNORE_INDEX  # a masked prompt
    targets[3, 9:] = IGNORE_INDEX  # right padding
    batches = [(inputs[:3], targets[:3]), (inputs[3:], targets[3:])]
    sums, counts = example_losses(
        model, EvalSet("t", lambda: iter(batches)), device=torch.device("cpu")
    )
    with torch.no_grad():
        alone = [
            float(token_loss_sum(model, inputs[i : i + 1], targets[i : i + 1])) for i in range(5)
        ]
    np.testing.assert_allclose(sums, alone, rtol=1e-5)
    assert counts.tolist() == [12, 5, 12, 9, 12]
