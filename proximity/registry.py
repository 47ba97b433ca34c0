"""The dataset registry: names users type, mapped to hub ids, local files and formats.

The built-in entries live in `registry.toml` beside this file; users add or replace entries in
their own TOML file of the same shape (`--registry FILE` or `$PROXIMITY_REGISTRY`, several
files separated by the OS path separator) without touching code.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from proximity.errors import ProximityError
from proximity.formatting import Formatting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

BUILTIN_REGISTRY = Path(__file__).with_name("registry.toml")
_FORMAT_KEYS = ("plain", "prompt", "response", "formatter")
_ENTRY_KEYS = {"domain", "description", "hub", "local", "mask_prompt", *_FORMAT_KEYS}
_HUB_KEYS = {"path", "config", "split", "revision", "data_dir", *_FORMAT_KEYS}
_LOCAL_KEYS = {"files", "split", "substitute", *_FORMAT_KEYS}


@dataclass(frozen=True)
class HubSource:
    path: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_dir: str | None = None
    formatting: Formatting = field(default_factory=Formatting)


@dataclass(frozen=True)
class LocalSource:
    files: tuple[str, ...]
    split: str = "train"
    substitute: str | None = None
    formatting: Formatting = field(default_factory=Formatting)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    domain: str = "other"
    description: str = ""
    formatting: Formatting = field(default_factory=Formatting)
    hub: HubSource | None = None
    local: tuple[LocalSource, ...] = ()
    mask_prompt: bool = False
    defined_in: str = "built-in registry"


class Registry:
    """Named datasets; later files override earlier ones by name."""

    def __init__(self, entries: dict[str, DatasetEntry]):
        self.entries = entries

    @classmethod
    def load(cls, extra_files: list[str | Path] | None = None) -> Registry:
        """The built-in registry plus `$PROXIMITY_REGISTRY` files plus `extra_files`."""
        files: list[Path] = [BUILTIN_REGISTRY]
        env = os.environ.get("PROXIMITY_REGISTRY")
        if env:
            files += [Path(item) for item in env.split(os.pathsep) if item]
        files += [Path(item) for item in extra_files or []]
        entries: dict[str, DatasetEntry] = {}
        for path in files:
            entries.update(_read_registry_file(path))
        return cls(entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str) -> DatasetEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise ProximityError(self.unknown_name_message(name)) from None

    def names(self) -> list[str]:
        return sorted(self.entries)

    def unknown_name_message(self, name: str) -> str:
        """What to change: a known name with a weight that is not a number names the weight
        (`starcoder:abc`); any other name gets the closest known names."""
        head, sep, tail = name.rpartition(":")
        if sep and head in self.entries:
            return (
                f"weight {tail!r} in {name} is not a number (a weight is in (0, 1], "
                f"e.g. {head}:0.2)"
            )
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return (
            f"unknown dataset {name!r}: {hint}Known names: {', '.join(self.names())}. "
            f"To use your own data pass a file path (e.g. data.jsonl?field=text), "
            f"hf:<hub id>, or add an entry with --registry FILE"
        )


def _read_registry_file(path: Path) -> dict[str, DatasetEntry]:
    if not path.is_file():
        raise ProximityError(
            f"registry file {path} not found (check --registry / $PROXIMITY_REGISTRY)"
        )
    # Every command resolves several specs; parse each file once per version of it.
    stat = path.stat()
    return dict(_parse_registry_file(path.resolve(), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=32)
def _parse_registry_file(
    path: Path, _mtime_ns: int, _size: int
) -> tuple[tuple[str, DatasetEntry], ...]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ProximityError(f"registry file {path}: invalid TOML ({error})") from None
    return tuple((name, _entry_from_toml(name, table, path)) for name, table in raw.items())


def _entry_from_toml(name: str, table: object, path: Path) -> DatasetEntry:
    where = f"registry file {path}, entry [{name}]"
    if not isinstance(table, dict):
        raise ProximityError(f"{where}: expected a table of settings")
    _check_keys(table, _ENTRY_KEYS, where)
    hub = None
    if "hub" in table:
        hub_table = table["hub"]
        _check_keys(hub_table, _HUB_KEYS, f"{where}, hub")
        if "path" not in hub_table:
            raise ProximityError(f'{where}, hub: needs path = "owner/name"')
        hub = HubSource(
            path=hub_table["path"],
            config=hub_table.get("config"),
            split=hub_table.get("split", "train"),
            revision=hub_table.get("revision"),
            data_dir=hub_table.get("data_dir"),
            formatting=_formatting(hub_table),
        )
    local = []
    for index, local_table in enumerate(table.get("local", [])):
        _check_keys(local_table, _LOCAL_KEYS, f"{where}, local #{index + 1}")
        files = local_table.get("files")
        if not files or not isinstance(files, list):
            raise ProximityError(f'{where}, local #{index + 1}: needs files = ["name.jsonl"]')
        local.append(
            LocalSource(
                files=tuple(files),
                split=local_table.get("split", "train"),
                substitute=local_table.get("substitute"),
                formatting=_formatting(local_table),
            )
        )
    if hub is None and not local:
        raise ProximityError(
            f"{where}: give a hub = {{path = ...}} or at least one [[{name}.local]]"
        )
    return DatasetEntry(
        name=name,
        domain=table.get("domain", "other"),
        description=table.get("description", ""),
        formatting=_formatting(table),
        hub=hub,
        local=tuple(local),
        mask_prompt=bool(table.get("mask_prompt", False)),
        defined_in=str(path),
    )


def _formatting(table: dict) -> Formatting:
    return Formatting(**{key: table.get(key) for key in _FORMAT_KEYS})


def _check_keys(table: object, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ProximityError(f"{where}: expected a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ProximityError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
