"""SFT examples: prompt masking, truncation, the loss convention and deterministic batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from proximity.data import load_examples
from proximity.tokenizer import load_tokenizer
from proximity.training.data.sft_data import IGNORE_INDEX, build_sft_data
from proximity.training.data.tokenized import validation_mask

N_DOCS = 200


@pytest.fixture(scope="module")
def pythia(pythia_tokenizer_path: Path):
    return load_tokenizer(str(pythia_tokenizer_path))


@pytest.fixture(scope="module")
def gsm8k_train_examples(shared_data) -> list:
    """The GSM8K examples that land in the train split (seed 0, 10% held out)."""
    examples = list(load_examples("gsm8k", n_docs=N_DOCS, data_dir=shared_data))
    held_out = validation_mask(len(examples), 0.1, 0, min_count=1)
    return [e for e, v in zip(examples, held_out, strict=True) if not v]


def test_prompt_and_response_are_tokenised_as_one_text(pythia, shared_data, gsm8k_train_examples):
    """The ids are the tokenizer's own for the whole text (reference: encode(prompt+response)),
    so the response keeps its leading-space token; only whole prompt tokens are masked."""
    train, _ = build_sft_data(
        "gsm8k", pythia, seq_len=512, mask_prompt=True, data_dir=shared_data, n_docs=N_DOCS
    )
    eos = pythia.token_to_id("<|endoftext|>")
    assert len(train) == len(gsm8k_train_examples)  # nothing dropped at this length
    for row, example in enumerate(gsm8k_train_examples):
        whole = pythia.encode(example.prompt + example.response, add_special_tokens=False).ids
        ids, labels = train.input_ids[row], train.labels[row]
        assert ids[: len(whole) + 1].tolist() == [*whole, eos]
        trained = labels != IGNORE_INDEX
        assert np.array_equal(labels[trained], ids[trained])
        first = int(np.argmax(trained))
        assert not trained[:first].any() and trained[first : len(whole) + 1].all()
        prompt_text = pythia.decode(ids[:first].tolist(), skip_special_tokens=False)
        response_text = pythia.decode(ids[trained].tolist(), skip_special_tokens=False)
        # The masked tokens are a prefix of the prompt; the trained ones cover the response.
        assert example.prompt.startswith(prompt_text)
        assert prompt_text + response_text == example.prompt + example.response + "<|endoftext|>"
    # GSM8K prompts end with "Answer: ": the space goes with the first answer word, as in
    # running text, so the prompt's trailing space token is not an input of its own.
    first_answer = pythia.decode(train.labels[0][train.labels[0] != IGNORE_INDEX].tolist()[:1])
    assert first_answer.startswith(" ") and first_answer.strip()
    answer = pythia.decode(
        train.labels[0][train.labels[0] != IGNORE_INDEX].tolist(), skip_special_tokens=False
    )
    assert "####" in answer and "Question" not in answer and answer.endswith("<|endoftext|>")


def test_without_masking_prompt_tokens_carry_loss(pythia, shared_data, gsm8k_train_examples):
    train, _ = build_sft_data(
        "gsm8k", pythia, seq_len=512, mask_prompt=False, data_dir=shared_data, n_docs=N_DOCS
    )
    for row, example in enumerate(gsm8k_train_examples[:50]):
        whole = pythia.encode(example.prompt + example.response, add_special_tokens=False).ids
        assert np.array_equal(train.labels[row][: len(whole)], whole)
    real = train.labels != IGNORE_INDEX
    assert np.array_equal(train.labels[real], train.input_ids[real])
    assert (train.input_ids[~real] == pythia.token_to_id("<|padding|>")).all()
    assert train.n_loss_tokens == int((train.labels[:, 1:] != IGNORE_INDEX).sum())


def test_storage_is_linear_in_tokens_not_examples_times_seq_len(pythia, shared_data):
    short, _ = build_sft_data(
        "gsm8k", pythia, seq_len=1024, mask_prompt=True, data_dir=shared_data, n_docs=N_DOCS
    )
    long, _ = build_sft_data(
        "gsm8k", pythia, seq_len=8192, mask_prompt=True, data_dir=shared_data, n_docs=N_DOCS
    )
    assert short.n_truncated == long.n_truncated == 0
    assert long.tokens.nbytes == short.tokens.nbytes  # 8x the length, the same memory
    assert long.tokens.nbytes * 50 < len(long) * 8192 * 8  # padded int64 rows: 50x more
    assert long.n_loss_tokens == int((long.labels[:, 1:] != IGNORE_INDEX).sum())


def test_hugging_face_loss_is_the_shifted_masked_cross_entropy(pythia, shared_data):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    train, _ = build_sft_data(
        "gsm8k", pythia, seq_len=128, mask_prompt=True, data_dir=shared_data, n_docs=20
    )
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=pythia.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    model = GPTNeoXForCausalLM(config).eval()
    input_ids, labels = next(train.batches(4, epoch=0, seed=0))
    with torch.no_grad():
        output = model(input_ids=input_ids, labels=labels)
    logits = output.logits[:, :-1].flatten(0, 1)
    manual = torch.nn.functional.cross_entropy(
        logits, labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )
    assert torch.allclose(output.loss, manual)
    n_trained = int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert 0 < n_trained < int((input_ids != pythia.token_to_id("<|padding|>")).sum())


def test_long_examples_lose_the_response_end_and_prompt_only_ones_are_dropped(pythia, shared_data):
    seq_len = 48
    train, val = build_sft_data(
        "gsm8k", pythia, seq_len=seq_len, mask_prompt=True, data_dir=shared_data, n_docs=N_DOCS
    )
    examples = list(load_examples("gsm8k", n_docs=N_DOCS, data_dir=shared_data))
    # Whole prompt tokens of the joint encoding: those ending within the prompt's characters.
    prompt_lengths = [
        sum(end <= len(x.prompt) for _, end in e.offsets)
        for e, x in zip(
            pythia.encode_batch(
                [x.prompt + x.response for x in examples], add_special_tokens=False
            ),
            examples,
            strict=True,
        )
    ]
    too_long = sum(n >= seq_len for n in prompt_lengths)
    assert too_long > 0 and train.n_dropped + val.n_dropped == too_long
    assert len(train) + len(val) == N_DOCS - too_long
    assert train.n_truncated > 0
    full = train.labels[:, -1] != IGNORE_INDEX  # truncated rows reach the last position
    assert full.sum() == train.n_truncated
    assert (train.input_ids[full, -1] != pythia.token_to_id("<|endoftext|>")).any()
    assert ((train.labels != IGNORE_INDEX).sum(axis=1) > 0).all()  # each row trains on some


def test_batches_are_deterministic_per_seed_and_epoch(pythia, shared_data):
    train, val = build_sft_data(
        "gsm8k", pythia, seq_len=256, mask_prompt=True, data_dir=shared_data, n_docs=N_DOCS
    )

    def full(x: torch.Tensor) -> torch.Tensor:  # batches are narrower than seq_len
        return torch.nn.functional.pad(x, (0, train.seq_len - x.shape[1]), value=train.pad_id)

    def order(epoch: int, seed: int) -> list[int]:
        rows = torch.cat([full(x) for x, _ in train.batches(16, epoch=epoch, seed=seed)])
        keys = {tuple(r.tolist()): i for i, r in enumerate(train.input_ids)}
        return [keys[tuple(r.tolist())] for r in rows]

    assert order(0, 0) == order(0, 0)
    assert sorted(order(0, 0)) == list(range(len(train)))  # each example once per epoch
    assert order(0, 0) != order(1, 0) and order(0, 0) != order(0, 1)
    batches = train.batches(16, epoch=3, seed=9, shuffle=False)
    unshuffled = torch.cat([full(x) for x, _ in batches])
    assert torch.equal(unshuffled, torch.from_numpy(train.input_ids))
    assert not {tuple(r) for r in train.input_ids.tolist()} & {
        tuple(r) for r in val.input_ids.tolist()
    }


def test_a_batch_padded_to_its_longest_example_has_the_loss_of_one_padded_to_seq_len(
    pythia, shared_data
):
    """Reference: the same rows padded to seq_len. Right padding carries no loss and causal
    attention keeps it out of every real position, so the loss agrees to float rounding,
    while the batch is only as wide as its longest example (rounded up to PAD_MULTIPLE)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from proximity.training.data.sft_data import PAD_MULTIPLE

    train, _ = build_sft_data(
        "gsm8k", pythia, seq_len=512, mask_prompt=True, data_dir=shared_data, n_docs=30
    )
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=pythia.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
    )  # fmt: skip
    model = GPTNeoXForCausalLM(config).eval()
    widths = []
    for input_ids, labels in train.batches(8, epoch=0, seed=0):
        width = input_ids.shape[1]
        widths.append(width)
        longest = int((labels != IGNORE_INDEX).nonzero()[:, 1].max()) + 1
        assert longest <= width < longest + PAD_MULTIPLE and width % PAD_MULTIPLE == 0
        full_ids = torch.nn.functional.pad(input_ids, (0, 512 - width), value=train.pad_id)
        full_labels = torch.nn.functional.pad(labels, (0, 512 - width), value=IGNORE_INDEX)
        with torch.no_grad():
            narrow = model(input_ids=input_ids, labels=labels).loss
            wide = model(input_ids=full_ids, labels=full_labels).loss
        torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-6)
    assert max(widths) < 512  # GSM8K examples are far shorter than seq_len
