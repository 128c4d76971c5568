"""The command line: a short run end to end, and errors without tracebacks."""

import json
import os

from keras_silc import cli


def test_train_runs_checkpoints_and_reports(tmp_path):
    output = str(tmp_path / "run")
    code = cli.main(
        [
            "train",
            "--steps",
            "8",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "4",
            "--output",
            output,
            "--quiet",
            "--set",
            "num_local_crops=2",
        ]
    )
    assert code == 0
    with open(os.path.join(output, "summary.json")) as f:
        report = json.load(f)
    summary = report["summary"]
    assert summary["steps"] == 8
    assert summary["final_loss"] < summary["first_loss"]
    assert len(report["history"]["loss"]) == 4
    assert os.path.exists(os.path.join(output, "model.keras"))


def test_user_errors_exit_cleanly(tmp_path, capsys):
    assert cli.main(["train", "--preset", "silc_huge", "--output", str(tmp_path)]) == 2
    assert "Unknown preset 'silc_huge'. Available presets" in capsys.readouterr().err
    assert cli.main(["train", "--set", "depth", "--output", str(tmp_path)]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["train", "--set", "vision.bogus=1", "--output", str(tmp_path)]) == 2
    assert "bogus" in capsys.readouterr().err


def test_parse_overrides_builds_nested_values():
    assert cli.parse_overrides(
        ["vision.depth=4", "contrastive_loss=siglip", "head.num_prototypes=64"]
    ) == {
        "vision": {"depth": 4},
        "contrastive_loss": "siglip",
        "head": {"num_prototypes": 64},
    }
