"""Example scripts run as written, so they cannot go stale."""

import os
import runpy

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def test_fit_example_batches_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(os.path.join(EXAMPLES, "fit_example_batches.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "in-batch image->text recall@1:" in out
    assert "dense features: (16, 4, 4, 32)" in out
    assert os.path.exists(tmp_path / "silc_tiny.keras")
