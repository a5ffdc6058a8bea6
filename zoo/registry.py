"""The zoo's registry: one entry per published checkpoint.

An entry is the `zoo.json` that `python -m zoo.publish` writes into the checkpoint's Hub-ready folder
under `zoo/weights/<name>/`; that folder is also the offline fallback of `zoo.load`. So a name is
registered exactly when its weights ship with the zoo, and the metrics an entry reports are the ones
its run measured. An unreadable `zoo.json` hides only its own model: listings skip it with a warning, and
asking for that name says what is wrong with the file.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import os
import warnings
from dataclasses import MISSING, asdict, dataclass, field
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
    backbone_weights: str = ""  # where the ImageNet backbone's weights came from (zoo.backbones), or why there is none
    sha256: str = ""  # of model.safetensors, written by zoo.publish; zoo.load refuses weights that differ

    @property
    def local_dir(self) -> Path:
        return WEIGHTS_DIR / self.name

    @classmethod
    def from_json(cls, path: Path) -> "ModelEntry":
        """The entry `path` holds; ValueError saying what is wrong with it otherwise."""
        try:
            data = json.loads(path.read_text())
        except ValueError as error:  # UnicodeDecodeError included
            raise ValueError(f"{path} is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an entry object")
        fields = cls.__dataclass_fields__
        lacking = [name for name, spec in fields.items()
                   if spec.default is MISSING and spec.default_factory is MISSING and name not in data]
        if lacking:
            raise ValueError(f"{path} lacks {', '.join(lacking)}")
        return cls(**{key: value for key, value in data.items() if key in fields})


def _scan() -> tuple[dict[str, ModelEntry], dict[str, str]]:
    """(entries, {folder name: why its zoo.json cannot be read}): one broken entry must not hide the others."""
    entries, broken = {}, {}
    for path in sorted(WEIGHTS_DIR.glob(f"*/{ENTRY_FILE}")):
        try:
            entry = ModelEntry.from_json(path)
            if entry.name != path.parent.name:
                raise ValueError(f"{path} names model '{entry.name}' but sits in folder '{path.parent.name}'")
        except ValueError as error:
            broken[path.parent.name] = str(error)
            continue
        entries[entry.name] = entry
    return entries, broken


def _entries() -> dict[str, ModelEntry]:
    entries, broken = _scan()
    for name, why in broken.items():
        warnings.warn(f"skipping model '{name}': {why}", stacklevel=3)
    return entries


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. `list_models("acis-*")`."""
    return [name for name in _entries() if fnmatch.fnmatchcase(name, pattern)]


def get_entry(name: str) -> ModelEntry:
    entries, broken = _scan()
    if name in broken:
        raise ValueError(
            f"model {name!r} cannot be loaded: {broken[name]}; restore the file (e.g. `git checkout` it), or remove "
            f"{WEIGHTS_DIR / name} and publish its run again (python -m zoo.publish RUN --name {name} --out FOLDER)"
        )
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


def markdown_cell(value) -> str:
    """`value` as the text of one markdown table cell: a `|` inside it (as in "|DiC|") would split the cell."""
    return str(value).replace("|", "\\|")


def markdown_row(cells) -> str:
    """One markdown table row of `cells`, each escaped by `markdown_cell`."""
    return "| " + " | ".join(markdown_cell(cell) for cell in cells) + " |"


def zoo_table() -> str:
    """A markdown table of the registry (the README's zoo table is generated from this)."""
    lines = [
        "| model | method | benchmark | measured on | results | backbone weights | hardware | Hub repo | reproduce |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in _entries().values():
        for result in entry.results or [{}]:
            metrics = ", ".join(f"{m.get('name', m['type'])} {m['value']:.4g}" for m in result.get("metrics", []))
            measured_on = ", ".join(filter(None, [result.get("dataset_name"), result.get("dataset_split")]))
            cells = [f"`{entry.name}`", entry.method, entry.benchmark, measured_on, metrics,
                     entry.backbone_weights or "n/a", entry.hardware,
                     f"`{entry.hub_repo}`", f"`{entry.recipe}`"]
            lines.append(markdown_row(cells))
    return "\n".join(lines)


TABLE_BEGIN = "<!-- zoo-table: generated by `python -m zoo.registry --update-readme`; do not edit -->"
TABLE_END = "<!-- /zoo-table -->"


def readme_with_table(readme: str) -> str:
    """The README text with its zoo table replaced by the one generated from the registry."""
    if TABLE_BEGIN not in readme or TABLE_END not in readme:
        raise ValueError(f"README lacks the zoo-table markers {TABLE_BEGIN!r} ... {TABLE_END!r}")
    head, rest = readme.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{zoo_table()}\n{TABLE_END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.registry", description="List the zoo's models.")
    parser.add_argument("--markdown", action="store_true", help="print the zoo table as markdown")
    parser.add_argument("--update-readme", action="store_true", help="rewrite the zoo table in README.md")
    args = parser.parse_args(argv)
    if args.update_readme:
        readme = Path(__file__).resolve().parent.parent / "README.md"
        readme.write_text(readme_with_table(readme.read_text()))
    elif args.markdown:
        print(zoo_table())
    else:
        for name in list_models():
            entry = get_entry(name)
            print(f"{name:20s} {entry.method:8s} {entry.benchmark:20s} {entry.hub_repo}")


if __name__ == "__main__":
    main()
