"""benchmarks/reproduce_table6.py: the table's bookkeeping (settings, reuse, statistics)."""

import numpy as np
import pytest
from conftest import hash_tokenizer
from conftest import tiny_model
from conftest import weights_numpy

from keras_silc import data

# The Table 6 rows' model settings: the one import of them in this file.
from keras_silc.experiments import TABLE6_ROWS


def _fit_steps(model, batch, steps):
    if not model.compiled:
        model.compile()
    size = len(batch["text"])
    return model.fit(batch, batch_size=size, epochs=steps, shuffle=False, verbose=0).history


def _table6_script():
    """benchmarks/reproduce_table6.py as a module."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "reproduce_table6.py")
    spec = importlib.util.spec_from_file_location("reproduce_table6", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.benchmark_script
def test_table6_train_scene_geometry_reaches_the_scenes_and_the_run_records(monkeypatch):
    """--items, --item-size and --scene-classes: parsed, passed to fashion_scenes, and part
    of the settings a finished run must match (a run on other scenes is refused, not mixed
    in)."""
    import argparse

    script = _table6_script()
    assert script.number_pair(int, "1,1") == (1, 1)
    assert script.number_pair(float, "0.4,0.8") == (0.4, 0.8)
    for bad in ("3,2", "1", "a,b", "1,2,3"):
        with pytest.raises(argparse.ArgumentTypeError, match="MIN"):
            script.number_pair(int, bad)

    seen = {}
    real = data.fashion_scenes

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(data, "fashion_scenes", recording)
    scene = {"min_items": 1, "max_items": 3, "item_size_range": [0.5, 0.9], "classes": "same"}
    script.build_run(
        "clip", 0, steps=10, batch_size=4, num_scenes=8, vocabulary_size=100,
        class_only_captions=1.0, scene=scene,
    )  # fmt: skip
    assert (seen["min_items"], seen["max_items"]) == (1, 3)
    assert seen["item_size_range"] == (0.5, 0.9)
    assert seen["scene_classes"] == "same"
    script.build_run(
        "clip", 0, steps=10, batch_size=4, num_scenes=8, vocabulary_size=100,
        class_only_captions=1.0,
    )  # fmt: skip
    # The table's default: fashion_scenes' geometry, all items of a scene of one class.
    assert (seen["min_items"], seen["max_items"], seen["item_size_range"]) == (2, 4, (0.25, 0.5))
    assert seen["scene_classes"] == "same"
    # A recorded scene without "classes" (from before the flag) is rebuilt as it was made.
    script.build_run(
        "clip", 0, steps=10, batch_size=4, num_scenes=8, vocabulary_size=100,
        class_only_captions=1.0, scene={"min_items": 2, "max_items": 4},
    )  # fmt: skip
    assert seen["scene_classes"] == "distinct"

    args = argparse.Namespace(
        steps=10, batch_size=4, class_only_captions=1.0, set=[], eval_items=100,
        eval_scenes=40, num_scenes=8, data_seed=None, items=(1, 3), item_size=(0.5, 0.9),
        scene_classes="same",
    )  # fmt: skip
    run = {
        "row": "clip", "seed": 0, "steps": 10, "batch_size": 4, "class_only_captions": 1.0,
        "overrides": [], "eval_items": 100, "eval_scenes": 40, "num_scenes": 8,
        "data_seed": 0, "scene": script.scene_of(args),
    }  # fmt: skip
    assert run["scene"] == scene
    assert script.settings_mismatch(run, args) is None
    # A run from before the flags existed was made on fashion_scenes' default scenes.
    del run["scene"]
    assert "min_items" in script.settings_mismatch(run, args)
    args.items, args.item_size = (2, 4), (0.25, 0.5)
    assert "'classes': 'distinct'" in script.settings_mismatch(run, args)
    args.scene_classes = "distinct"
    assert script.settings_mismatch(run, args) is None
    # One from before --scene-classes (a recorded scene without "classes") drew distinct ones.
    run["scene"] = {"min_items": 2, "max_items": 4, "item_size_range": [0.25, 0.5]}
    assert script.settings_mismatch(run, args) is None


def test_distillation_settings_do_not_touch_the_rows_without_distillation():
    """The Table 6 script lets those rows ignore its DISTILLATION_ONLY settings and reuses
    their runs across ablations of them: here every such setting changes nothing there.
    (The head's depth is not one: its layers' initializers draw seeds.)"""
    script = _table6_script()
    settings = {
        "head": {"num_prototypes": 64, "hidden_dim": 48, "bottleneck_dim": 24, "batch_norm": True},
        "distillation_weight": 3.0,
        "student_temperature": 0.2,
        "teacher_temperature": 0.03,
        "warmup_teacher_temperature": 0.02,
        "teacher_temperature_warmup_steps": 5,
        "freeze_last_layer_steps": 3,
        "center_momentum": 0.5,
        "num_local_crops": 2,
        "local_crop_size": 24,
    }
    keys = [f"head.{key}" for key in settings["head"]] + [k for k in settings if k != "head"]
    assert sorted(keys) == sorted(script.DISTILLATION_ONLY)
    # The batch comes through the input pipeline, which the crop settings act on.
    images = np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    pairs = data.from_arrays(images, ["a shirt", "a red bag", "two boots", "a coat"])

    for row in ("clip", "clip+views+ema"):
        runs = []
        for extra in ({}, settings):
            model = tiny_model(**TABLE6_ROWS[row], **extra)
            # deterministic: a loaded CPU may reorder parallel map stages' output otherwise.
            dataset = data.training_dataset(
                pairs, model.preprocessor, 4, tokenizer=hash_tokenizer(), seed=0, deterministic=True
            )
            batch = {k: np.asarray(v) for k, v in next(iter(dataset)).items()}
            assert "local_crops" not in batch
            history = _fit_steps(model, batch, 2)
            kept = [v for v in model.weights if "/head/" not in v.path]
            runs.append((history["loss"], weights_numpy(kept)))
        np.testing.assert_array_equal(runs[0][0], runs[1][0])
        for plain, ablated in zip(runs[0][1], runs[1][1], strict=True):
            np.testing.assert_array_equal(plain, ablated)
    assert script.row_overrides("silc_c", ["teacher_temperature=0.03", "vision.depth=2"]) == [
        "teacher_temperature=0.03",
        "vision.depth=2",
    ]
    assert script.row_overrides(
        "siglip_views_ema", ["head.batch_norm=false", "vision.depth=2"]
    ) == ["vision.depth=2"]


# ------------------------------------------------------------------ statistics
@pytest.mark.backend_independent
def test_mean_interval_is_the_student_t_interval_of_the_mean():
    script = _table6_script()
    cell = script.mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # mean 3, sample std sqrt(2.5), t_{0.975, 4} = 2.776445: 3 -/+ 2.776445 sqrt(2.5 / 5).
    half = 2.776445 * np.sqrt(2.5 / 5)
    assert (cell["mean"], cell["n"]) == (3.0, 5)
    np.testing.assert_allclose(cell["std"], np.sqrt(2.5))
    np.testing.assert_allclose([cell["low"], cell["high"]], [3 - half, 3 + half], rtol=1e-6)
    assert script.mean_interval([0.3])["low"] is None


@pytest.mark.backend_independent
def test_paired_difference_pairs_by_seed_and_matches_scipy():
    from scipy import stats

    script = _table6_script()
    row = {0: 1.0, 1: 2.0, 2: 4.0, 3: 3.0, 4: 6.0, 7: 9.0}  # seed 7: no baseline, left out
    baseline = {0: 0.5, 1: 1.0, 2: 2.0, 3: 2.5, 4: 3.0, 9: 0.0}
    test = script.paired_difference(row, baseline)
    differences = np.array([0.5, 1.0, 2.0, 0.5, 3.0])
    assert test["seeds"] == [0, 1, 2, 3, 4] and test["n"] == 5
    # By hand: mean 1.4, sample variance 4.7 / 4, t = mean / (std / sqrt(5)).
    std = np.sqrt(4.7 / 4)
    np.testing.assert_allclose([test["mean"], test["std"]], [1.4, std])
    np.testing.assert_allclose(test["t"], 1.4 / (std / np.sqrt(5)))
    reference = stats.ttest_rel([1.0, 2.0, 4.0, 3.0, 6.0], [0.5, 1.0, 2.0, 2.5, 3.0])
    np.testing.assert_allclose([test["t"], test["p"]], [reference.statistic, reference.pvalue])
    half = stats.t.ppf(0.975, 4) * differences.std(ddof=1) / np.sqrt(5)
    np.testing.assert_allclose([test["low"], test["high"]], [1.4 - half, 1.4 + half])
    # The p-value and the interval agree: p < 0.05 exactly when the interval excludes 0.
    assert (test["p"] < 0.05) == (test["low"] > 0)
    assert script.paired_difference({0: 1.0}, {1: 1.0})["n"] == 0
    constant = script.paired_difference({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})
    assert constant["p"] == 0.0 and constant["t"] == float("inf")


@pytest.mark.backend_independent
def test_holm_adjusts_step_down_and_stays_monotone():
    script = _table6_script()
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> 0.06 (monotone).
    np.testing.assert_allclose(
        script.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12
    )
    np.testing.assert_allclose(script.holm([0.5, 0.9]), [1.0, 1.0])
    assert script.holm([]) == []


def _fake_run(script, row, seed, shift=0.0):
    """A finished run record with the table's default settings (scenes of one class)."""
    rng = np.random.default_rng(1000 * seed + len(row))
    steps = script.row_steps(row, script.TABLE_STEPS)
    results = {
        metric: 0.3 + 0.01 * seed + shift + 0.002 * rng.normal() for metric in script.METRICS
    }
    return {
        "row": row, "seed": seed, "backend": "torch", "steps": steps, "batch_size": 64,
        "class_only_captions": 1.0, "overrides": [], "eval_items": 10_000, "eval_scenes": 1000,
        "num_scenes": 20_000, "data_seed": seed, "scene": dict(script.DEFAULT_SCENE),
        "results": results, "train_seconds": 60.0, "final_logs": {},
        "flops_per_step": script.flops_per_step(row, 64, []),
        "train_flops": steps * script.flops_per_step(row, 64, []),
    }  # fmt: skip


@pytest.mark.backend_independent
def test_comparisons_are_paired_holm_corrected_and_need_five_seeds():
    script = _table6_script()
    rows = ["clip", "silc_c", "clip_views_ema", "siglip", "silc_s"]
    runs = []
    for seed in range(5):
        runs.append(_fake_run(script, "clip", seed))
        # A gain of 5 points, far above the 0.2-point noise: every metric beats.
        runs.append(_fake_run(script, "silc_c", seed, shift=0.05))
        # SILC-C's equal: the distillation adds nothing over it, nothing to resolve.
        runs.append(_fake_run(script, "clip_views_ema", seed, shift=0.05))
    for seed in range(3):  # three seeds: numbers, no claim
        runs.append(_fake_run(script, "siglip", seed))
        runs.append(_fake_run(script, "silc_s", seed, shift=0.05))
    results, planned = script.compare(runs, rows=rows)
    by = {(r["row"], r["baseline"], r["metric"]): r for r in results}
    metrics = list(script.METRICS)
    # The plan: SILC-C - CLIP, SILC-S - SigLIP, SILC-C - (+ views + EMA); every metric.
    assert planned == 3 * len(metrics)
    assert len(results) == 3 * len(metrics)
    # Two of the three comparisons have five seeds: Holm over those, Bonferroni over the plan.
    family = [r for r in results if r["holm_p"] is not None]
    assert len(family) == 2 * len(metrics)
    p = np.array([r["p"] for r in family])
    np.testing.assert_allclose([r["holm_p"][0] for r in family], script.holm(list(p)))
    np.testing.assert_allclose([r["holm_p"][1] for r in family], np.minimum(1.0, planned * p))
    for metric in metrics:
        assert by[("silc_c", "clip", metric)]["verdict"] == "beats"
        np.testing.assert_allclose(by[("silc_c", "clip", metric)]["mean"], 0.05, atol=0.01)
        assert by[("silc_c", "clip_views_ema", metric)]["p"] > 0.05
        assert by[("silc_c", "clip_views_ema", metric)]["verdict"] == "not resolved"
        assert by[("silc_s", "siglip", metric)]["verdict"] == "fewer than 5 seeds: no claim"
        assert by[("silc_s", "siglip", metric)]["holm_p"] is None
    # Reversed, the same test says "worse".
    flipped = [{**run, "row": {"clip": "silc_c", "silc_c": "clip"}.get(run["row"], run["row"])}
               for run in runs]  # fmt: skip
    assert all(
        r["verdict"] == "worse"
        for r in script.compare(flipped, rows=rows)[0]
        if (r["row"], r["baseline"]) == ("silc_c", "clip")
    )
    # The family does not depend on which runs exist: fewer rows asked for, a smaller plan.
    assert script.compare(runs, rows=["clip", "silc_c"])[1] == len(metrics)
    assert script.compare(runs)[1] == len(script.COMPARISONS) * len(metrics)


def _runs_with_gains(script, row, baseline, gains):
    """Five seeds of `baseline` and of `row`, `row` ahead by gains[seed] on every metric."""
    runs = []
    for seed, gain in enumerate(gains):
        runs.append(_fake_run(script, baseline, seed))
        runs.append({**_fake_run(script, row, seed), "results": {
            metric: value + gain for metric, value in runs[-1]["results"].items()}})  # fmt: skip
    return runs


@pytest.mark.backend_independent
def test_a_partial_family_gives_a_verdict_only_where_the_rest_cannot_change_it():
    from scipy import stats

    script = _table6_script()
    rows = ["clip", "silc_c", "siglip", "silc_s"]  # the plan: 2 comparisons x 6 metrics
    planned = 2 * len(script.METRICS)
    done = len(script.METRICS)  # SILC-C - CLIP only, until SILC-S lands

    def p_of(gains):
        return stats.ttest_1samp(gains, 0.0).pvalue

    clear = [0.010, 0.012, 0.008, 0.011, 0.009]
    borderline = [0.010, 0.020, 0.005, 0.015, 0.012]
    none = [0.001, -0.002, 0.0015, -0.001, 0.0005]
    # The construction: Holm over the tests done rejects the borderline gain, the plan's
    # Bonferroni does not; the clear gain passes both.
    assert planned * p_of(clear) < 0.05
    assert done * p_of(borderline) < 0.05 <= planned * p_of(borderline)
    siglip_rows = _runs_with_gains(script, "silc_s", "siglip", none)
    for gains, partial_verdict, final_verdict in (
        (clear, "beats", "beats"),
        (borderline, "pending", "not resolved"),
    ):
        runs = _runs_with_gains(script, "silc_c", "clip", gains)
        results, size = script.compare(runs, rows=rows)
        assert size == planned
        for r in results:
            np.testing.assert_allclose(r["holm_p"], (done * r["p"], min(1, planned * r["p"])))
            assert r["verdict"] == partial_verdict
        # SILC-S lands with no gain: the family is complete, one Holm p per test.
        results, _ = script.compare(runs + siglip_rows, rows=rows)
        assert all(r["holm_p"][0] == r["holm_p"][1] for r in results)
        assert {r["verdict"] for r in results if r["row"] == "silc_c"} == {final_verdict}
        assert {r["verdict"] for r in results if r["row"] == "silc_s"} == {"not resolved"}


@pytest.mark.benchmark_script
def test_no_train_builds_a_partial_table_and_names_the_missing_cells(tmp_path, monkeypatch):
    import json
    import sys

    script = _table6_script()
    grid = {"clip": range(5), "silc_c": range(5), "siglip": range(2), "clip_compute": range(5)}
    for row, seeds in grid.items():
        for seed in seeds:
            run = _fake_run(script, row, seed, shift=0.05 * (row == "silc_c"))
            if row == "siglip":  # recorded before the FLOP count: taken from TRAIN_FLOPS
                del run["flops_per_step"], run["train_flops"]
            (tmp_path / f"{row}-seed{seed}.json").write_text(json.dumps(run))
    table = tmp_path / "table.md"
    argv = ["reproduce_table6.py", "--no-train", "--output", str(tmp_path), "--table", str(table)]
    monkeypatch.setattr(sys, "argv", argv + ["--rows", "clip,silc_c,siglip,silc_s,clip_compute"])
    script.main()
    text = table.read_text()
    assert "Partial grid: missing siglip seed(s) 2, 3, 4; silc_s seed(s) 0, 1, 2, 3, 4." in text
    assert "| + self-distillation (SILC-C) minus CLIP | equal examples | ZS top-1 | 5 |" in text
    # The compute-matched baseline's runs (5,616 steps) match a table of 1,500 steps.
    assert "| CLIP at SILC-C's compute (5,616 steps) | 5 |" in text
    assert "minus CLIP at SILC-C's compute | equal compute | ZS top-1 | 5 |" in text
    assert "| beats |" in text and "beats the spread" not in text
    assert "CLIP 11.1 TFLOPs, + self-distillation (SILC-C) 41.6 TFLOPs, SigLIP 11.1" in text
    # The family is the plan (3 comparisons of the rows asked for x 6 metrics), not the 12
    # tests that the records allow so far.
    assert "Holm's correction runs over the family of the 18 planned tests" in text
    assert "12 have 5 paired seeds so far" in text
    assert not list(tmp_path.glob("*.weights.h5"))  # nothing trained
    monkeypatch.setattr(sys, "argv", argv[:2] + ["--output", str(tmp_path / "absent")])
    with pytest.raises(SystemExit, match="absent"):
        script.main()


@pytest.mark.benchmark_script
def test_runs_train_seed_major_unless_row_major_is_asked_for():
    script = _table6_script()
    rows, seeds = ["clip", "silc_c"], [0, 1, 2]
    assert script.run_order(rows, seeds) == [
        ("clip", 0),
        ("silc_c", 0),
        ("clip", 1),
        ("silc_c", 1),
        ("clip", 2),
        ("silc_c", 2),
    ]
    assert script.run_order(rows, seeds, "rows") == [
        ("clip", 0),
        ("clip", 1),
        ("clip", 2),
        ("silc_c", 0),
        ("silc_c", 1),
        ("silc_c", 2),
    ]


@pytest.mark.benchmark_script
def test_reuse_of_a_missing_or_empty_folder_is_an_error(tmp_path):
    import argparse

    script = _table6_script()
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "typo", tmp_path / "empty"):
        args = argparse.Namespace(reuse=[str(folder)], output=str(tmp_path / "out"))
        with pytest.raises(SystemExit, match=str(folder)):
            script.reuse_runs(args, [("clip", 0)])


@pytest.mark.benchmark_script
def test_compute_matched_baselines_train_for_their_silc_rows_flops():
    script = _table6_script()
    flops = script.TRAIN_FLOPS
    assert flops["silc_c"] > flops["clip"] and flops["silc_s"] > flops["siglip"]
    for row, silc in (("clip_compute", "silc_c"), ("siglip_compute", "silc_s")):
        steps = script.row_steps(row, 1500)
        assert steps > 1500
        # Within one step of SILC's compute.
        assert abs(steps * flops[script.baseline_of(row)] - 1500 * flops[silc]) <= flops[silc]
        assert script.flops_per_step(row, 64, []) == flops[script.baseline_of(row)]
    assert script.row_steps("clip", 1500) == 1500
    assert script.flops_per_step("clip", 8, []) is None  # not counted at that batch
    assert script.flops_per_step("clip", 64, ["vision.depth=2"]) is None


def test_train_flops_counts_a_silc_step_as_costlier_than_a_clip_step():
    """benchmarks/train_flops.py's count (XLA's, so JAX only) on tiny models."""
    import importlib.util
    import os

    from conftest import BACKEND

    if BACKEND != "jax":
        pytest.skip("XLA's cost analysis: JAX only")
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "train_flops.py")
    spec = importlib.util.spec_from_file_location("train_flops", path)
    train_flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_flops)
    counts = {}
    for row in ("clip", "silc"):
        model = tiny_model(**TABLE6_ROWS[row])
        model.compile()
        batch = model.preprocessor.example_batch(4)
        needed = set(model.required_keys())
        batch = {k: v for k, v in batch.items() if k in needed}
        counts[row] = train_flops.train_step_flops(model, batch)
    assert 0 < counts["clip"] < counts["silc"]


@pytest.mark.benchmark_script
@pytest.mark.parametrize("regime", ["distinct", "same"])
def test_results_doc_holds_the_tables_that_the_committed_records_give(
    regime, tmp_path, monkeypatch
):
    """docs/results.md's tables, rebuilt from the committed run records (`--no-train`): a
    record changed, added or removed without regenerating the page fails here."""
    import pathlib
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    records = root / "docs" / "runs" / "table6" / regime
    table = tmp_path / "table.md"
    argv = ["reproduce_table6.py", "--no-train", "--seeds", "0,1,2,3,4"]
    argv += ["--scene-classes", regime, "--output", str(records), "--table", str(table)]
    monkeypatch.setattr(sys, "argv", argv)
    _table6_script().main()
    lines = table.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("Partial grid", "| model")))
    doc = (root / "docs" / "results.md").read_text()
    assert "\n".join(lines[start:]).strip() in doc
