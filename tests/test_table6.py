"""benchmarks/reproduce_table6.py: the table's bookkeeping (settings, reuse, statistics)."""

import numpy as np
import pytest
from conftest import hash_tokenizer
from conftest import tiny_model
from conftest import weights_numpy

# The Table 6 rows' model settings: the one import of them in this file.
from keras_silc import TABLE6_ROWS
from keras_silc import data


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
                pairs, model, 4, tokenizer=hash_tokenizer(), seed=0, deterministic=True
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
