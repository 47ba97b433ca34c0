from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoXForCausalLM

from proximity.errors import ProximityError
from proximity.training.presets import PRESETS, count_parameters, model_config, padded_vocab_size

PYTHIA_VOCAB = 50277  # the GPT-NeoX-20B tokenizer, padded to 50,304 rows like Pythia's


@pytest.mark.parametrize(
    ("preset", "n_params"),
    [  # totals from the Pythia model cards (EleutherAI/pythia-*)
        ("14m", 14_067_712),
        ("31m", 30_494_720),
        ("70m", 70_426_624),
        ("160m", 162_322_944),
        ("410m", 405_334_016),
        ("1b", 1_011_781_632),
    ],
)
def test_pythia_presets_have_pythias_parameter_counts(preset, n_params):
    config = model_config(preset, vocab_size=PYTHIA_VOCAB)
    assert config.vocab_size == 50304
    assert count_parameters(config) == n_params


def test_parameter_formula_matches_the_built_model():
    config = model_config("70m", vocab_size=PYTHIA_VOCAB)
    model = GPTNeoXForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(config)


def test_pythia_architecture_details():
    config = model_config("160m", vocab_size=PYTHIA_VOCAB)
    assert config.use_parallel_residual and not config.tie_word_embeddings
    assert config.rope_parameters["partial_rotary_factor"] == 0.25
    assert config.intermediate_size == 4 * config.hidden_size == 3072
    assert config.num_hidden_layers == 12 and config.num_attention_heads == 12


def test_vocabulary_is_padded_to_a_multiple_of_128():
    assert padded_vocab_size(512) == 512
    assert padded_vocab_size(513) == 640
    assert padded_vocab_size(8192) == 8192
    assert model_config("micro-2l-64", vocab_size=1000).vocab_size == 1024


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.startswith("micro")])
def test_micro_presets_build_and_run_with_sdpa(preset):
    model = GPTNeoXForCausalLM(model_config(preset, vocab_size=300))
    assert model.config._attn_implementation == "sdpa"
    logits = model(input_ids=torch.randint(0, 300, (2, 16))).logits
    assert logits.shape == (2, 16, 384)


def test_unknown_preset_names_the_field():
    with pytest.raises(ProximityError, match=r"model.preset.*70m"):
        model_config("70M-ish", vocab_size=100)
