"""Per-example validation losses: each row's sum against the full-logits loss of that row alone,
and the one-pass end of an SFT run against the two passes it replaces."""

from __future__ import annotations

import numpy as np
import torch
from transformers import GPTNeoXForCausalLM

from proximity.training.evaluate import (
    EvalSet,
    evaluate,
    evaluate_with_examples,
    example_losses,
)
from proximity.training.losses import (
    IGNORE_INDEX,
    chunked_loss_sum,
    chunked_losses,
    chunked_row_loss_sums,
    token_loss_sum,
)
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


class _HeadlessLM(torch.nn.Module):
    """A model without a separate output head: the losses fall back to whole-batch logits."""

    def __init__(self, inner: GPTNeoXForCausalLM) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, use_cache=False):
        return self.inner(input_ids=input_ids, use_cache=use_cache)


def test_one_pass_gives_bitwise_the_mean_loss_and_the_example_losses_of_two_passes():
    torch.manual_seed(1)
    model = GPTNeoXForCausalLM(model_config("micro-2l-64", vocab_size=97)).eval()
    inputs = torch.randint(0, 97, (7, 12))
    targets = torch.randint(0, 97, (7, 12))
    targets[2, :5] = IGNORE_INDEX
    targets[6, 4:] = IGNORE_INDEX
    target_set = EvalSet("t", lambda: iter([(inputs[:4], targets[:4]), (inputs[4:], targets[4:])]))
    other = EvalSet("c4", lambda: iter([(inputs[1:3], targets[3:5])]))
    cpu = torch.device("cpu")
    for scored_model in (model, _HeadlessLM(model)):
        apart = evaluate(scored_model, [target_set, other], device=cpu)
        sums, counts = example_losses(scored_model, target_set, device=cpu)
        # a small chunk: the output head runs over several chunks per batch
        with torch.no_grad():
            total, rows = chunked_losses(scored_model, inputs, targets, chunk=5)
            alone_total = chunked_loss_sum(scored_model, inputs, targets, chunk=5)
            alone_rows = chunked_row_loss_sums(scored_model, inputs, targets, chunk=5)
        assert torch.equal(total, alone_total) and torch.equal(rows, alone_rows)
        for example_set in (target_set, EvalSet("t", target_set.batches)):  # shared, or not
            together, (sums2, counts2) = evaluate_with_examples(
                scored_model, [target_set, other], example_set, device=cpu
            )
            assert together == apart  # exact float equality, both sets
            assert np.array_equal(sums2, sums) and np.array_equal(counts2, counts)
    # and the examples add up to the mean loss (an independent relation, not bitwise)
    np.testing.assert_allclose(sums.sum() / counts.sum(), apart["t"], rtol=1e-6)
