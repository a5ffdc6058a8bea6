"""`recipes.acis_table1` on run directories that exist already: no training, only the table and the card note."""

from __future__ import annotations

import json

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


def test_table_lists_init_ac_and_each_row_and_the_note_is_replaced_not_repeated(tmp_path):
    run_dir = tmp_path / "acis-cvppp"
    write_run(run_dir, "AC", 0.3, 6.0, before=0.2)
    write_run(row_dir(run_dir, "BL-Trunc"), "BL-Trunc", 0.01, 13.0)
    write_run(row_dir(run_dir, "BL"), "BL", 0.1, 12.0)
    argv = ["cvppp", "--run-dir", str(run_dir), "--rows", "BL", "BL-Trunc"]
    table = main(argv).splitlines()
    assert table[0] == "| row | Symmetric Best Dice | \\|DiC\\| | command |"
    assert [line.split(" | ")[1:3] for line in table[2:]] == [["0.2", "9"], ["0.3", "6"], ["0.1", "12"], ["0.01", "13"]]
    assert (run_dir / "table1.md").read_text().splitlines() == table
    main(argv)
    notes = json.loads((run_dir / "results.json").read_text())["notes"]
    assert notes[0] == "kept" and len(notes) == 2 and notes[1].startswith(NOTE_PREFIX)
    assert "BL-Trunc: Symmetric Best Dice 0.01, |DiC| 13 (`python -m recipes.acis_cvppp --ablation BL-Trunc`)" in notes[1]
    assert "AC-NoSP" not in notes[1]
