"""Tokenizers by hub name, alias or local path, and a fingerprint to key caches on.

The default is the Pythia (GPT-NeoX-20B) tokenizer the paper used. Offline, aliases resolve to
`<data folder>/tokenizers/<name>/tokenizer.json`; online, to the hub.

`TokenizerHandle` is a tokenizer loaded only when text must be tokenised: a command whose
statistics are all cached needs only the fingerprint, which for a local `tokenizer.json` is
remembered under the cache folder by the file's path, size and modification time (parsing
and hashing the 50k Pythia tokenizer costs ~0.1 s otherwise).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from proximity.atomic import write_text_atomic
from proximity.cache import cache_dir
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
    local = local_tokenizer_path(name_or_path, data_dir)
    if local is not None:
        return _from_path(local)
    path = Path(name_or_path).expanduser()
    alias = _alias(name_or_path)
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


def _alias(name: str) -> tuple[str, str] | None:
    alias = ALIASES.get(name)
    if alias is None and name.startswith("EleutherAI/pythia"):
        alias = ALIASES["pythia"]
    return alias


def local_tokenizer_path(name_or_path: str, data_dir: str | Path | None = None) -> Path | None:
    """The local file or folder `load_tokenizer` would read, or None (the hub)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    alias = _alias(name_or_path)
    folder = resolve_data_dir(data_dir)
    if alias is not None and folder is not None:
        local = folder / "tokenizers" / alias[0]
        if local.exists():
            return local
    return None


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


class TokenizerHandle:
    """A tokenizer by name, loaded on first use; its fingerprint without loading it when a
    local `tokenizer.json` was fingerprinted before (see the module docstring)."""

    def __init__(self, name_or_path: str | Tokenizer, data_dir: str | Path | None = None):
        self._loaded = name_or_path if isinstance(name_or_path, Tokenizer) else None
        self.name = name_or_path if isinstance(name_or_path, str) else "<tokenizer>"
        self.data_dir = data_dir
        self._fingerprint: str | None = None

    def get(self) -> Tokenizer:
        """The tokenizer, loaded now if it was not yet."""
        if self._loaded is None:
            self._loaded = load_tokenizer(self.name, self.data_dir)
        return self._loaded

    @property
    def fingerprint(self) -> str:
        """`tokenizer_fingerprint` of the tokenizer, remembered per local file version."""
        if self._fingerprint is None:
            self._fingerprint = self._remembered() or tokenizer_fingerprint(self.get())
        return self._fingerprint

    def _remembered(self) -> str | None:
        if self._loaded is not None:
            return None
        path = local_tokenizer_path(self.name, self.data_dir)
        if path is not None and path.is_dir():
            path = path / "tokenizer.json"
        if path is None or not path.is_file():
            return None  # the hub, or a vocab.json + merges.txt folder: load it
        stat = path.stat()
        version = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        memo = cache_dir() / "tokenizers" / f"{hashlib.sha256(version.encode()).hexdigest()[:32]}"
        try:
            stored = json.loads(memo.with_suffix(".json").read_text(encoding="utf-8"))
            if stored.get("version") == version:
                return str(stored["fingerprint"])
        except (OSError, ValueError, KeyError):
            pass
        fingerprint = tokenizer_fingerprint(self.get())
        record = {"version": version, "fingerprint": fingerprint}
        write_text_atomic(memo.with_suffix(".json"), json.dumps(record))
        return fingerprint
