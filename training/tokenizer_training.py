"""Train a small byte-level BPE tokenizer on a pretraining corpus: `proximity tokenizer train`.

Why: at micro scale on CPU, a 50k-vocabulary embedding and output head dominate a tiny
model's compute, so the micro grid uses a ~8k tokenizer trained on its own pretraining data.
The recipe copies GPT-NeoX's (Pythia's) tokenizer: NFC normalisation, byte-level pre-tokenizer
and decoder (every string is encodable, nothing is unknown), BPE, and the same special tokens
at the same ids (`<|endoftext|>` = 0, `<|padding|>` = 1), so the rest of the trainer treats a
small tokenizer and the Pythia one alike.

    proximity tokenizer train --corpus c4 --vocab-size 8192 --n-docs 2000 --out runs/tokenizer-8k
    proximity tokenizer info runs/tokenizer-8k
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from proximity.atomic import atomic_path, write_text_atomic
from proximity.data import resolve
from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer, tokenizer_fingerprint
from proximity.training.data.tokenized import EOS_TOKEN, PAD_TOKEN

SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)  # ids 0 and 1, as in GPT-NeoX
# The 256 byte symbols plus the special tokens exist before any merge is learned.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS) + 1

tokenizer_app = typer.Typer(
    help="Train and inspect tokenizers.", no_args_is_help=True, add_completion=False
)
console = Console()
DataDirOption = Annotated[
    Path | None, typer.Option(help="Local data folder (else $PROXIMITY_DATA_DIR).")
]


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    length: int | None = None,
    show_progress: bool = False,
) -> Tokenizer:
    """Learn a GPT-NeoX-style byte-level BPE with `vocab_size` entries (special tokens included).

    The result can have fewer entries than asked when the corpus runs out of pairs seen
    `min_frequency` times; callers that care (the CLI) compare `get_vocab_size()` with the request.
    `length` is the number of texts, for the progress bar only.
    """
    _check_vocab_size(vocab_size)
    if min_frequency < 1:
        raise ProximityError(f"--min-frequency {min_frequency} must be at least 1")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return tokenizer


def _check_vocab_size(vocab_size: int) -> None:
    if vocab_size < MIN_VOCAB_SIZE:
        raise ProximityError(
            f"--vocab-size {vocab_size} is too small: a byte-level BPE needs at least "
            f"{MIN_VOCAB_SIZE} (256 bytes + special tokens + 1 merge)"
        )


def save_tokenizer(tokenizer: Tokenizer, out: Path, info: dict | None = None) -> Path:
    """Write `out/tokenizer.json` (for `load_tokenizer`) and `out/tokenizer_info.json` (provenance).

    Returns the path of tokenizer.json.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tokenizer.json"
    with atomic_path(path) as tmp:  # a half-written tokenizer.json is never loaded
        tokenizer.save(str(tmp))
    if info is not None:
        write_text_atomic(out / "tokenizer_info.json", json.dumps(info, indent=2) + "\n")
    return path


@tokenizer_app.command("train")
def train_command(
    corpus: Annotated[str, typer.Option(help="Dataset spec to learn from, e.g. c4 or code.jsonl.")],
    out: Annotated[Path, typer.Option(help="Output folder; tokenizer.json is written there.")],
    vocab_size: Annotated[
        int, typer.Option(help="Vocabulary size, special tokens included.")
    ] = 8192,
    n_docs: Annotated[int, typer.Option(help="Documents to read from the corpus.")] = 2000,
    max_chars: Annotated[
        int | None, typer.Option(help="Cut each document to this many characters.")
    ] = None,
    min_frequency: Annotated[
        int, typer.Option(help="Minimum count of a pair for it to be merged.")
    ] = 2,
    data_dir: DataDirOption = None,
) -> None:
    """Train a byte-level BPE tokenizer on a corpus; writes OUT/tokenizer.json and
    OUT/tokenizer_info.json (what it was trained on)."""
    if n_docs < 1:
        raise ProximityError(f"--n-docs {n_docs} must be at least 1")
    _check_vocab_size(vocab_size)  # before reading any data
    source = resolve(corpus, data_dir=data_dir)
    if source.info.substitute:
        console.print(f"[yellow]note:[/] {source.info.substitute}", highlight=False)
    texts = list(source.texts(n_docs=n_docs, max_chars=max_chars))
    if not any(texts):
        raise ProximityError(f"--corpus {corpus!r} gave no text to learn from")
    tokenizer = train_tokenizer(
        texts, vocab_size, min_frequency=min_frequency, length=len(texts), show_progress=True
    )
    learned = tokenizer.get_vocab_size()
    n_chars = sum(len(text) for text in texts)
    n_tokens = sum(len(enc.ids) for enc in tokenizer.encode_batch(texts))
    info = {
        "corpus": corpus,
        "source_fingerprint": source.fingerprint,
        "n_docs": len(texts),
        "max_chars": max_chars,
        "requested_vocab_size": vocab_size,
        "vocab_size": learned,
        "min_frequency": min_frequency,
        "chars_per_token": round(n_chars / max(n_tokens, 1), 4),
    }
    path = save_tokenizer(tokenizer, out, info)
    console.print(
        f"saved {path}: {learned} tokens, {info['chars_per_token']:.2f} characters per token "
        f"on {len(texts)} training documents",
        highlight=False,
    )
    if learned < vocab_size:
        console.print(
            f"[yellow]warning:[/] only {learned} of {vocab_size} tokens learned; "
            "raise --n-docs or lower --min-frequency",
            highlight=False,
        )


@tokenizer_app.command("info")
def info_command(
    tokenizer: Annotated[
        str, typer.Argument(help="tokenizer.json, a folder holding one, or a name.")
    ],
    text: Annotated[
        str, typer.Option(help="Text to encode.")
    ] = "Hello world! def f(x): return 2 * x",
    data_dir: DataDirOption = None,
) -> None:
    """Print a tokenizer's size, special tokens, fingerprint, and how it splits a text (writes
    nothing)."""
    loaded = load_tokenizer(tokenizer, data_dir=data_dir)
    special = {token: loaded.token_to_id(token) for token in SPECIAL_TOKENS}
    encoding = loaded.encode(text, add_special_tokens=False)
    console.print(f"vocab size   {loaded.get_vocab_size()}", highlight=False)
    console.print(f"special      {special}", highlight=False)
    console.print(f"fingerprint  {tokenizer_fingerprint(loaded)}", highlight=False)
    console.print(f"{len(encoding.ids)} tokens: {encoding.tokens}", highlight=False)
