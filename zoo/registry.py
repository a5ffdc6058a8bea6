"""The zoo's registry: one entry per published checkpoint.

An entry is the `zoo.json` that `python -m zoo.publish` writes into the checkpoint's Hub-ready folder
under `zoo/weights/<name>/`; that folder is also the offline fallback of `zoo.load`. So a name is
registered exactly when its weights ship with the zoo, and the metrics an entry reports are the ones
its run measured.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# `ZOO_WEIGHTS_DIR` points the registry at another folder of published checkpoints (your own, or a test's).
WEIGHTS_DIR = Path(os.environ.get("ZOO_WEIGHTS_DIR") or Path(__file__).resolve().parent / "weights")
ENTRY_FILE = "zoo.json"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model_type: str
    method: str
    paper: str
    paper_url: str
    benchmark: str
    hub_repo: str
    revision: str | None  # a 40-hex commit sha once pushed; None while the Hub repo has no pinned commit
    recipe: str  # the command that reproduces the checkpoint
    card: str  # model card template in model_cards/
    results: list = field(default_factory=list)  # [{dataset_name, dataset_split, data, metrics: [{type, name, value}]}]
    trained_on: str = ""
    hardware: str = ""

    @property
    def local_dir(self) -> Path:
        return WEIGHTS_DIR / self.name

    @classmethod
    def from_json(cls, path: Path) -> "ModelEntry":
        data = json.loads(path.read_text())
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


def _entries() -> dict[str, ModelEntry]:
    entries = {}
    for path in sorted(WEIGHTS_DIR.glob(f"*/{ENTRY_FILE}")):
        entry = ModelEntry.from_json(path)
        if entry.name != path.parent.name:
            raise ValueError(f"{path} names model '{entry.name}' but sits in folder '{path.parent.name}'")
        entries[entry.name] = entry
    return entries


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. `list_models("acis-*")`."""
    return [name for name in _entries() if fnmatch.fnmatchcase(name, pattern)]


def get_entry(name: str) -> ModelEntry:
    entries = _entries()
    if name not in entries:
        close = difflib.get_close_matches(name, entries, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise KeyError(
            f"unknown model {name!r}: {hint}registered models: {', '.join(entries) or '(none)'} "
            "(zoo.list_models() lists them; a local folder path or a Hub repo id 'org/name' also works)"
        )
    return entries[name]


def model_info(name: str) -> dict:
    """Paper, method, benchmark, Hub repo and revision, measured metrics (with their data) and recipe."""
    return asdict(get_entry(name))


def zoo_table() -> str:
    """A markdown table of the registry (the README's zoo table is generated from this)."""
    lines = [
        "| model | method | benchmark | measured on | results | Hub repo | reproduce |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in _entries().values():
        for result in entry.results or [{}]:
            metrics = ", ".join(f"{m.get('name', m['type'])} {m['value']:.4g}" for m in result.get("metrics", []))
            lines.append(
                f"| `{entry.name}` | {entry.method} | {entry.benchmark} | {result.get('data', '')} | {metrics} "
                f"| `{entry.hub_repo}` | `{entry.recipe}` |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.registry", description="List the zoo's models.")
    parser.add_argument("--markdown", action="store_true", help="print the zoo table as markdown")
    args = parser.parse_args(argv)
    if args.markdown:
        print(zoo_table())
    else:
        for name in list_models():
            entry = get_entry(name)
            print(f"{name:20s} {entry.method:8s} {entry.benchmark:20s} {entry.hub_repo}")


if __name__ == "__main__":
    main()
