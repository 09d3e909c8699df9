"""benchmarks/recipe_robustness.py's bookkeeping (no training here): seeds, breakthrough, the table."""
import recipe_robustness as robust  # benchmarks/ is on the tests' pythonpath (pyproject.toml)


def test_seed_ranges_and_breakthrough():
    assert robust.seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert robust.breakthrough([0.3, 0.5, 0.86, 0.99]) == 3
    assert robust.breakthrough([0.3, None, 0.6]) is None


def test_report_gives_the_distribution_per_recipe_and_every_run():
    rows = [{"recipe": "default", "collection": f"draw {seed}", "classes": 6, "val_acc": [0.3, acc],
             "seconds": 120.0 + seed, "load": "1.00/1.00/1.00 -> 2.00/1.00/1.00", "ended_in": None}
            for seed, acc in enumerate([0.5, 0.9, 1.0])]
    rows[0]["ended_in"] = {"kind": "group_plateau"}
    text = robust.report(rows)
    assert "| default | draw ×3 | 0.500 / " in text and "| 2 of 3 |" in text and "| – 2 2 |" in text
    assert "group_plateau" in text and all(f"| default | draw {seed} | 6 | 0.30 " in text for seed in range(3))
