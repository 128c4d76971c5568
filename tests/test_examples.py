"""Example scripts run as written, so they cannot go stale."""

import os
import runpy

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def test_fit_example_batches_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(os.path.join(EXAMPLES, "fit_example_batches.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "in-batch image->text recall@1:" in out
    assert "dense features: (16, 4, 4, 32)" in out
    assert os.path.exists(tmp_path / "silc_tiny.keras")


# The backend sessions that run each notebook. The quickstart, the first one a user opens,
# runs on every backend; the others on one each, to keep CI short (the library code they call
# is tested on every backend by the unit tests); `backends` switches backends itself.
NOTEBOOK_BACKENDS = {
    "quickstart": ("jax", "tensorflow", "torch"),
    "own_data": ("tensorflow",),
    "segmentation": ("jax",),
    "backends": ("torch",),
    "pretrained": ("torch",),
}


@pytest.mark.parametrize("name", sorted(NOTEBOOK_BACKENDS))
def test_notebook_runs_top_to_bottom(name, tmp_path):
    """Each notebook runs in a fresh kernel on the suite's backend with a tiny configuration."""
    backend = os.environ.get("KERAS_BACKEND", "jax")
    if backend not in NOTEBOOK_BACKENDS[name]:
        pytest.skip(f"{name}.ipynb runs in the {', '.join(NOTEBOOK_BACKENDS[name])} session")
    import nbclient
    import nbformat

    notebook = nbformat.read(os.path.join(EXAMPLES, f"{name}.ipynb"), as_version=4)
    env = {"KERAS_SILC_QUICK": "1", "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax")}
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors


@pytest.mark.benchmark_script
def test_reproduce_table6_quick_mode(tmp_path):
    """The Table 6 script end to end at smoke size: two rows, one seed, a table; two runs at
    a time, with a model override recorded in each run."""
    import json
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "reproduce_table6.py")
    table = tmp_path / "table.md"
    command = [sys.executable, script, "--quick", "--output", str(tmp_path / "runs"), "--jobs", "2"]
    command += ["--set", "head.num_prototypes=128"]
    subprocess.run(command + ["--table", str(table)], check=True, timeout=900)
    text = table.read_text()
    assert "| CLIP |" in text and "| + self-distillation (SILC-C) |" in text
    assert "minus CLIP" in text and "head.num_prototypes=128" in text
    assert "Evaluated on 100 single test items" in text and "binomial standard error" in text
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert runs == [
        "clip-seed0.json",
        "clip-seed0.weights.h5",
        "silc_c-seed0.json",
        "silc_c-seed0.weights.h5",
    ]
    with open(tmp_path / "runs" / "silc_c-seed0.json") as handle:
        run = json.load(handle)
    assert run["overrides"] == ["head.num_prototypes=128"]
    with open(tmp_path / "runs" / "clip-seed0.json") as handle:
        assert json.load(handle)["overrides"] == []  # CLIP has no head to take it
    assert run["config"]["head"]["num_prototypes"] == 128
    assert (run["eval_items"], run["eval_scenes"]) == (100, 40)
    # The saved weights fit a model built from the recorded config.
    from keras_silc import SilcModel

    model = SilcModel.from_preset("silc_tiny", **run["config"])
    model.load_weights(str(tmp_path / "runs" / "silc_c-seed0.weights.h5"))
    assert run["config"]["self_distillation"] is True
    assert "teacher_entropy" in run["final_logs"]
    # The trained head's state, checked on test scenes, goes into the JSON and the table.
    state = run["distillation"]
    assert state["collapse"] in ("uniform", "dominant", "none")
    assert 0 <= state["entropy"] <= state["max_entropy"] + 1e-6
    assert "distillation heads (distillation_diagnostics" in text
    # The line defines only the states that occur.
    if state["collapse"] == "none":
        assert "no head collapsed" in text and "(uniform:" not in text
    else:
        assert f"({state['collapse']}: " in text
    # A second invocation reuses the finished runs instead of training again.
    again = subprocess.run(command, check=True, timeout=300, capture_output=True, text=True)
    assert "training 4 steps" not in again.stdout and "clip seed 0: ZS top-1" in again.stdout
    # Runs made with other overrides are not mixed into the table.
    other = command[:-1] + ["head.num_prototypes=64"]
    mixed = subprocess.run(other, timeout=300, capture_output=True, text=True)
    assert mixed.returncode != 0 and "use another --output" in mixed.stderr
    # --reuse: an ablation of the head takes its CLIP run from the first table's folder.
    ablation = [sys.executable, script, "--quick", "--rows", "clip", "--reuse"]
    ablation += [str(tmp_path / "runs"), "--output", str(tmp_path / "ablation")]
    ablation += ["--set", "head.num_prototypes=64", "--table", str(tmp_path / "ablation.md")]
    reused = subprocess.run(ablation, check=True, timeout=300, capture_output=True, text=True)
    assert "clip seed 0: reused from" in reused.stdout
    assert "training 4 steps" not in reused.stdout
    assert sorted(os.listdir(tmp_path / "ablation")) == ["clip-seed0.json", "clip-seed0.weights.h5"]
    assert "do not take head.num_prototypes=64" in (tmp_path / "ablation.md").read_text()


@pytest.mark.benchmark_script
def test_head_collapse_probe_prints_the_head_state_every_n_steps():
    """benchmarks/head_collapse.py at smoke size: two steps, diagnosed after each."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "head_collapse.py")
    command = [sys.executable, script, "--steps", "2", "--every", "1", "--num-scenes", "128"]
    command += ["--probe-scenes", "8", "--no-eval", "--set", "head.num_prototypes=64"]
    output = subprocess.run(command, check=True, timeout=600, capture_output=True, text=True)
    lines = [line for line in output.stdout.splitlines() if line.startswith("step")]
    assert [line.split()[1] for line in lines] == ["1", "2"]
    assert all("/4.16 cosine" in line for line in lines)  # log 64 = 4.16
    assert "head.num_prototypes=64" in output.stdout and "training:" in output.stdout
