"""benchmarks/paper_scale.py (the paper-scale GPU row of train_throughput.py) runs its code path on
the CPU at a tiny size: JPEG files through the DataLoader, the reference loop and ours with every
lever that exists off CUDA. No timing is asserted (benchmarks measure, tests do not)."""
import sys

import torch

import paper_scale  # benchmarks/ is on the tests' pythonpath (pyproject.toml)
import run_all


def test_reference_and_ours_run_on_jpeg_files_at_tiny_size(tmp_path):
    paths = paper_scale.write_jpegs(tmp_path / "jpegs", 4, (80, 120))
    assert all(path.suffix == ".jpg" and path.stat().st_size > 0 for path in paths)
    common = ["--backbone", "tiny", "--classes", "5", "--batch-size", "2", "--scale", "0.1", "--workers", "0",
              "--steps", "1", "--warmup", "1", "--device", "cpu", "--jpeg-dir", str(tmp_path / "jpegs")]
    for variant, resize in (("reference", "multiscale"), ("ours", "fixed"), ("intr-train", "multiscale"),
                            ("intr-train", "fixed")):
        args = paper_scale.parse([*common, "--resize", resize, "--variant", variant])
        result = paper_scale.measure(args)
        assert result["images_per_second"] > 0 and result["device"] == "cpu"
        assert result["levers"] == (sorted(paper_scale.LEVERS) if variant == "ours" else [])
        if variant == "intr-train":
            assert result["precision"] == "fp32"  # a small CPU step, as intr train chooses


def test_the_intr_train_variant_runs_the_products_epoch_loop(tmp_path, monkeypatch):
    from intr_training import engine
    from napari_intr.recipes import RECIPES
    epochs, dropouts = [], set()
    original = engine.train_one_epoch

    def counted(model, loader, *args, **kwargs):
        epochs.append(len(loader))
        dropouts.update(m.p for m in model.modules() if isinstance(m, torch.nn.Dropout))
        dropouts.add(model.config.dropout)
        return original(model, loader, *args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", counted)
    paper_scale.write_jpegs(tmp_path / "jpegs", 3, (80, 120))
    args = paper_scale.parse(["--backbone", "tiny", "--classes", "3", "--batch-size", "2", "--scale", "0.1",
                              "--workers", "0", "--steps", "3", "--warmup", "2", "--device", "cpu", "--jpeg-dir",
                              str(tmp_path / "jpegs"), "--variant", "intr-train"])
    assert paper_scale.measure(args)["images_per_second"] > 0
    assert epochs == [2, 3]  # warm-up, then the timed steps (the loader wraps around its 3 images)
    assert dropouts == {RECIPES["tiny"]["dropout"]}  # intr train's recipe (tiny: 0, CPU attention's fused kernel)


def test_run_all_has_the_paper_scale_row_on_cuda(monkeypatch):
    calls = []

    def fake_compare(argv):
        calls.append(argv)
        result = {"images_per_second": 10.0, "peak_mib": 100.0, "device": "cuda:0"}
        return {"results": {"reference": result, "intr train": {**result, "images_per_second": 15.0},
                            "ours": {**result, "images_per_second": 25.0, "peak_mib": 40.0}},
                "args": paper_scale.parse(argv)}

    monkeypatch.setattr(paper_scale, "compare", fake_compare)
    monkeypatch.setitem(sys.modules, "paper_scale", paper_scale)
    rows = run_all.paper_scale_rows(quick=True)
    assert {"--device", "cuda"} <= set(calls[0]) and len(calls) == 2  # multi-scale and fixed 800x1200
    ours = [r for r in rows if r["measurement"].endswith(": ours")]
    assert ours and all("2.50x speed, 0.40x memory" == r["ratio"] and "met" in r["target / notes"] for r in ours)
    product = [r for r in rows if r["measurement"].endswith(": intr train")]
    assert product and all("1.50x speed, 1.00x memory" == r["ratio"] and "NOT met" in r["target / notes"]
                           for r in product)
