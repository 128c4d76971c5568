"""The command line: train on Fashion scenes, resume, evaluate, and errors without tracebacks."""

import json
import os

import tensorflow as tf

from keras_silc import cli

TRAIN_SMALL = [
    "--steps",
    "2",
    "--checkpoint-every",
    "1",
    "--batch-size",
    "4",
    "--num-scenes",
    "64",
    "--vocabulary-size",
    "128",
    "--quiet",
    "--set",
    "num_local_crops=2",
]
EVAL_SMALL = ["--eval-items", "40", "--eval-scenes", "8"]
SMALL = [*EVAL_SMALL, *TRAIN_SMALL]


def test_train_evaluates_reports_and_resumes(tmp_path, capsys):
    # Every output goes through tf.io.gfile: TensorFlow's in-memory file system stands in
    # for a bucket (gs://...).
    output = f"ram://{tmp_path.name}/run"
    assert cli.main(["train", "--output", output, *SMALL]) == 0
    for name in ("model.keras", "report.json", "report.md", "segmentation.png", "history.csv"):
        assert tf.io.gfile.exists(f"{output}/{name}"), name
    assert not os.path.exists(output) and not os.path.exists("ram:")
    report = json.loads(tf.io.gfile.GFile(f"{output}/report.json").read())
    assert 0.0 <= report["results"]["zero_shot/top1"] <= 1.0
    assert "segmentation/miou" in report["results"]
    assert "zero_shot/top1" in capsys.readouterr().out
    # Started again, the finished run resumes at its end and trains no more.
    assert cli.main(["train", "--output", output, *TRAIN_SMALL, "--skip-evaluation"]) == 0
    assert '"resumed_from_step": 2' in capsys.readouterr().out
    # A different run in the same folder is refused with a message.
    assert cli.main(["train", "--output", output, *SMALL[:-2], "--set", "num_local_crops=3"]) == 2
    assert "different run" in capsys.readouterr().err
    # Another checkpoint interval was blamed on the step count ("a checkpoint at step 4").
    other_interval = [*TRAIN_SMALL[:3], "2", *TRAIN_SMALL[4:]]
    assert cli.main(["train", "--output", output, *other_interval]) == 2
    assert "checkpoints every 1 steps; resume it with --checkpoint-every 1" in (
        capsys.readouterr().err
    )
    assert (
        cli.main(
            [
                "evaluate",
                f"{output}/model.keras",
                "--eval-items",
                "20",
                "--eval-scenes",
                "4",
            ]
        )
        == 0
    )


def test_train_with_photometric_on_the_accelerator(tmp_path):
    output = str(tmp_path / "run")
    args = ["train", "--output", output, *TRAIN_SMALL, "--skip-evaluation"]
    assert cli.main([*args, "--photometric", "accelerator"]) == 0
    with open(os.path.join(output, "run_config.json")) as handle:
        assert json.load(handle)["photometric"] == "accelerator"
    # The same folder with the augmentation moved back to the host is another run.
    assert cli.main(args) == 2


def test_user_errors_exit_cleanly(tmp_path, capsys):
    assert cli.main(["train", "--preset", "silc_huge", "--output", str(tmp_path)]) == 2
    assert "Unknown preset 'silc_huge'. Available presets" in capsys.readouterr().err
    assert cli.main(["train", "--set", "depth", "--output", str(tmp_path)]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["train", "--data", "csv", "--output", str(tmp_path)]) == 2
    assert "needs --data-path" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "train",
                "--data",
                "webdataset",
                "--data-path",
                str(tmp_path / "*.tar"),
                "--output",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "No WebDataset shards match" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "missing.keras")]) == 2
    assert "No saved model" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert cli.main(["train", "--output", str(blocked / "run")]) == 2
    assert "Cannot create the output folder" in capsys.readouterr().err


def test_parse_overrides_builds_nested_values():
    assert cli.parse_overrides(
        ["vision.depth=4", "contrastive_loss=siglip", "head.num_prototypes=64"]
    ) == {
        "vision": {"depth": 4},
        "contrastive_loss": "siglip",
        "head": {"num_prototypes": 64},
    }
    # JSON and Python spellings of booleans and None; anything else stays a string.
    assert cli.parse_overrides(
        ["head.batch_norm=False", "a=true", "b=None", "c=null", "d=[1, 2]", "e=False-ish"]
    ) == {
        "head": {"batch_norm": False},
        "a": True,
        "b": None,
        "c": None,
        "d": [1, 2],
        "e": "False-ish",
    }


def test_demo_trains_the_documented_model_with_class_only_captions(tmp_path):
    from keras_silc.experiments import fashion as demo

    args = cli.make_parser().parse_args(["demo"])
    cli._check_training_arguments(args)  # fills in the defaults of the flags left out
    assert (args.steps, args.batch_size) == (demo.DEMO_STEPS, demo.DEMO_BATCH) == (600, 64)
    assert args.class_only_captions == demo.DEMO_CLASS_ONLY_CAPTIONS == 1.0
    output = str(tmp_path / "demo")
    small = [a for a in TRAIN_SMALL if a not in ("--set", "num_local_crops=2")]
    assert cli.main(["demo", "--output", output, *small, "--skip-evaluation"]) == 0
    with open(os.path.join(output, "run_config.json")) as handle:
        overrides = json.load(handle)["overrides"]
    assert overrides["vision"] == demo.DEMO_OVERRIDES["vision"]
    assert overrides["num_local_crops"] == demo.DEMO_OVERRIDES["num_local_crops"]
    # Every training caption names classes only: no colour or position words.
    pairs, captions = demo.make_pairs("fashion_scenes", num_scenes=32, class_only_captions=1.0)
    words = {"left", "right", "top", "bottom", "center", "red", "green", "blue", "yellow"}
    assert not any(
        words & set(caption.replace(",", " ").replace(".", " ").split()) for caption in captions
    )
