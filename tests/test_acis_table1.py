"""`recipes.acis_table1` on run directories that exist already: no training, only the table and the card note."""

from __future__ import annotations

import json

import pytest

from pathlib import Path

from recipes import acis_table1 as table1
from recipes.acis_table1 import NOTE_PREFIX, main, row_dir


def write_run(run_dir, ablation, sbd, abs_dic, before=None):
    run_dir.mkdir(parents=True)
    metrics = {"SBD": sbd, "absDiC": abs_dic, "DiC": -abs_dic, "FBD": 0.5}
    if before is not None:
        metrics["before_train_stage"] = {"SBD": before, "absDiC": 9.0, "DiC": -9.0, "FBD": 0.4}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    results = {
        "ablation": ablation, "command": f"python -m recipes.acis_cvppp --ablation {ablation}", "notes": ["kept"],
        "results": [{"metrics": [{"type": "sbd", "name": "Symmetric Best Dice", "value": sbd},
                                 {"type": "abs_dic", "name": "|DiC|", "value": abs_dic}]}],
    }
    (run_dir / "results.json").write_text(json.dumps(results))


def test_rows_are_mean_and_spread_over_seeds_and_the_note_is_replaced_not_repeated(tmp_path):
    run_dir = tmp_path / "acis-cvppp"
    write_run(run_dir, "AC", 0.3, 6.0, before=0.2)
    for seed, (sbd, dic) in enumerate([(0.1, 12.0), (0.2, 10.0), (0.3, 14.0)]):
        write_run(row_dir(run_dir, "BL", seed), "BL", sbd, dic)
    for seed, (sbd, dic) in enumerate([(0.01, 13.0), (0.01, 13.0), (0.04, 10.0)]):
        write_run(row_dir(run_dir, "BL-Trunc", seed), "BL-Trunc", sbd, dic)
    argv = ["cvppp", "--run-dir", str(run_dir), "--rows", "BL", "BL-Trunc"]
    table = main(argv).splitlines()
    assert table[0] == "| row | Symmetric Best Dice | \\|DiC\\| | seeds |"
    cells = [line.rstrip(" |").split(" | ")[1:4] for line in table[2:]]
    assert cells[0] == ["0.200", "9.000", "1"]  # the init actor: one run
    assert cells[1] == ["0.200 ± 0.100 (0.100, 0.200, 0.300)", "12.000 ± 2.000 (12.000, 10.000, 14.000)", "3"]
    assert cells[2][0] == "0.020 ± 0.017 (0.010, 0.010, 0.040)"
    assert (run_dir / "table1.md").read_text().splitlines() == table
    stored = json.loads((run_dir / "table1.json").read_text())
    assert stored["rows"]["BL"]["SBD"] == pytest.approx([0.1, 0.2, 0.3])
    main(argv)
    notes = json.loads((run_dir / "results.json").read_text())["notes"]
    assert notes[0] == "kept" and len(notes) == 2 and notes[1].startswith(NOTE_PREFIX)
    assert "BL-Trunc: Symmetric Best Dice 0.020 ± 0.017" in notes[1]
    assert "BL: `python -m recipes.acis_cvppp --ablation BL`" in notes[1] and "BL [0, 1, 2]" in notes[1]
    assert "AC-NoSP" not in notes[1]


def test_a_missing_base_run_says_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match="run `python -m recipes.acis_cvppp` first"):
        main(["cvppp", "--run-dir", str(tmp_path / "nothing")])


def test_row_seeds_give_a_row_its_own_seeds(tmp_path):
    run_dir = tmp_path / "acis-cvppp"
    write_run(run_dir, "AC", 0.3, 6.0, before=0.2)
    for seed in (0, 1):
        write_run(row_dir(run_dir, "BL", seed), "BL", 0.1 * (seed + 1), 12.0)
    write_run(row_dir(run_dir, "AC-NoSP", 1), "AC-NoSP", 0.05, 15.0)
    table = main(["cvppp", "--run-dir", str(run_dir), "--rows", "BL", "AC-NoSP", "--seeds", "0", "1",
                  "--row-seeds", "AC-NoSP=1"]).splitlines()
    assert table[-1].startswith("| AC-NoSP | 0.050 | 15.000 | 1 |")
    assert json.loads((run_dir / "table1.json").read_text())["seeds"] == {"BL": [0, 1], "AC-NoSP": [1]}
    with pytest.raises(SystemExit, match="--row-seeds"):
        main(["cvppp", "--run-dir", str(run_dir), "--rows", "BL", "--row-seeds", "AC-NoSP=1"])


def test_options_after_a_double_dash_reach_every_rows_command(tmp_path, monkeypatch):
    run_dir = tmp_path / "acis-cvppp"
    write_run(run_dir, "AC", 0.3, 6.0, before=0.2)
    commands = []

    def fake_row(command):
        commands.append(command)
        write_run(Path(command[command.index("--run-dir") + 1]), "BL", 0.1, 12.0)

    monkeypatch.setattr(table1, "run_row", fake_row)
    main(["cvppp", "--run-dir", str(run_dir), "--rows", "BL", "--seeds", "3", "--train-epochs", "8", "--",
          "--data-dir", "somewhere", "--profile", "cpu"])
    assert commands[0][-8:] == ["--train-epochs", "8", "--pretrained-run", str(run_dir), "--data-dir", "somewhere",
                                "--profile", "cpu"]
    assert commands[0][commands[0].index("--seed") + 1] == "3"
    recorded = json.loads((run_dir / "results.json").read_text())["table1_command"]
    assert recorded.endswith("--train-epochs 8 -- --data-dir somewhere --profile cpu")


def test_init_seeds_train_their_own_init_stage_from_the_base_cvae_and_spread_the_init_row(tmp_path, monkeypatch):
    run_dir = tmp_path / "acis-cvppp"
    write_run(run_dir, "AC", 0.3, 6.0, before=0.2)
    results = json.loads((run_dir / "results.json").read_text())
    results["command"] = "python -m recipes.acis_cvppp --seed 1 --profile cpu"
    (run_dir / "results.json").write_text(json.dumps(results))
    for seed, sbd in ((0, 0.31), (1, 0.33)):
        write_run(row_dir(run_dir, "AC", seed), "AC", sbd, 6.0)
    commands = []

    def fake_row(command):
        commands.append(command)
        seed = int(command[command.index("--seed") + 1])
        write_run(Path(command[command.index("--run-dir") + 1]), "AC", 0.5 + seed / 10, 5.0, before=0.4 + seed / 10)

    monkeypatch.setattr(table1, "run_row", fake_row)
    table = main(["cvppp", "--run-dir", str(run_dir), "--rows", "AC", "--seeds", "0", "1",
                  "--init-seeds", "3", "1", "2"]).splitlines()
    # the base run's own seed (1) is not trained again: its init stage is the base run's
    assert [c[c.index("--seed") + 1] for c in commands] == ["3", "2"]
    assert all(c[c.index("--ablation") + 1] == "AC" and c[c.index("--run-dir") + 1].endswith(f"-init-s{c[c.index('--seed') + 1]}")
               for c in commands)
    assert commands[0][commands[0].index("--pretrained-run"):][:5] == [
        "--pretrained-run", str(run_dir), "--share-stages", "preproc", "cvae"]
    # per-seed values in seed order, whatever the order of --init-seeds
    assert table[2].startswith("| init actor (before the last stage) | 0.500 ± 0.265 (0.200, 0.600, 0.700) |")
    assert table[-1].startswith("| AC, own init stage | 0.610 ± 0.248 (0.330, 0.700, 0.800) |")
    stored = json.loads((run_dir / "table1.json").read_text())
    assert stored["seeds"]["init actor"] == [1, 2, 3] and stored["seeds"]["AC, own init stage"] == [1, 2, 3]


def test_rows_copied_from_another_base_run_say_where_they_ran(tmp_path):
    run_dir = tmp_path / "acis-cvppp"
    write_run(run_dir, "AC", 0.3, 6.0, before=0.2)
    for seed in (0, 1):
        write_run(row_dir(run_dir, "BL", seed), "BL", 0.1, 12.0)
    copied = row_dir(run_dir, "BL", 1) / "results.json"
    results = json.loads(copied.read_text())
    results["command"] = "python -m recipes.acis_cvppp --ablation BL --seed 1 --run-dir runs/old-bl-s1"
    copied.write_text(json.dumps(results))
    main(["cvppp", "--run-dir", str(run_dir), "--rows", "BL", "--seeds", "0", "1"])
    note = json.loads((run_dir / "results.json").read_text())["notes"][-1]
    assert note.endswith(f"copied): {row_dir(run_dir, 'BL', 1)} ran in runs/old-bl-s1.")
