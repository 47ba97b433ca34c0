"""Tokenizers by hub name, alias or local path, and a fingerprint to key caches on.

The default is the Pythia (GPT-NeoX-20B) tokenizer the paper used. Offline, aliases resolve to
`<data folder>/tokenizers/<name>/tokenizer.json`; online, to the hub.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from proximity.data import resolve_data_dir
from proximity.errors import ProximityError
from proximity.readers import require_hub

DEFAULT_TOKENIZER = "pythia"
# alias -> (folder name under <data>/tokenizers, hub id)
ALIASES: dict[str, tuple[str, str]] = {
    "pythia": ("gpt-neox-20b", "EleutherAI/gpt-neox-20b"),
    "gpt-neox-20b": ("gpt-neox-20b", "EleutherAI/gpt-neox-20b"),
    "EleutherAI/gpt-neox-20b": ("gpt-neox-20b", "EleutherAI/gpt-neox-20b"),
    "gpt2": ("gpt2", "openai-community/gpt2"),
}


def load_tokenizer(
    name_or_path: str = DEFAULT_TOKENIZER, data_dir: str | Path | None = None
) -> Tokenizer:
    """A `tokenizers.Tokenizer` from a path (file or folder), an alias, or a hub id.

    Every Pythia size shares one tokenizer, so `EleutherAI/pythia-160m` maps to the same files.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _from_path(path)
    alias = ALIASES.get(name_or_path)
    if alias is None and name_or_path.startswith("EleutherAI/pythia"):
        alias = ALIASES["pythia"]
    folder = resolve_data_dir(data_dir)
    if alias is not None and folder is not None:
        local = folder / "tokenizers" / alias[0]
        if local.exists():
            return _from_path(local)
    if name_or_path.endswith(".json") or name_or_path.startswith((".", "/", "~")):
        raise ProximityError(f"tokenizer file not found: {path}")
    hub_id = alias[1] if alias else name_or_path
    require_hub(
        f"tokenizer {name_or_path!r} (not found locally; pass --tokenizer path/to/tokenizer.json "
        f"or --data-dir with tokenizers/{alias[0] if alias else '<name>'}/tokenizer.json)"
    )
    try:
        return Tokenizer.from_pretrained(hub_id)
    except Exception as error:
        raise ProximityError(
            f"tokenizer {name_or_path!r} not found locally and not loadable from the hub "
            f"({type(error).__name__}); pass --tokenizer path/to/tokenizer.json, or --data-dir "
            f"with tokenizers/{alias[0] if alias else '<name>'}/tokenizer.json inside"
        ) from None


def _from_path(path: Path) -> Tokenizer:
    if path.is_dir():
        if (path / "tokenizer.json").exists():
            path = path / "tokenizer.json"
        elif (path / "vocab.json").exists() and (path / "merges.txt").exists():
            # GPT-2 style vocab/merges pair: byte-level BPE without a tokenizer.json.
            tokenizer = Tokenizer(
                models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
            )
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
            return tokenizer
        else:
            raise ProximityError(f"{path}: no tokenizer.json (or vocab.json + merges.txt) inside")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:
        raise ProximityError(f"{path}: not a tokenizers JSON file ({error})") from None


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """A hash of the tokenizer's full definition, so caches never mix tokenizers.

    Computed each time (about 16 ms for the 50k Pythia tokenizer): memoising on `id()` would
    hand a stale fingerprint to a new tokenizer that reuses a freed object's id.
    """
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]
