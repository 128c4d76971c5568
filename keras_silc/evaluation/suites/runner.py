"""`run_suites`: several suites on one model, one report (report.json, report.md, pictures)."""

import datetime
import json
import math
import numbers
import os
import time

import numpy as np

from keras_silc.evaluation.suites import parse_suites
from keras_silc.evaluation.suites import resolve
from keras_silc.evaluation.suites.data import check_data_dir


def run_suites(
    model,
    suites,
    data_dir,
    output_dir,
    *,
    tokenizer=None,
    batch_size=None,
    max_examples=None,
    verbose=1,
    options=None,
    model_name=None,
):
    """Runs `suites` on `model` and writes one report to `output_dir`.

    Every requested data set is looked for before the model runs at all, so a missing one
    stops the run at once with a message that says where it was looked for and how to get it.
    report.json and report.md are rewritten after each suite, so a long run that stops midway
    keeps the finished suites' numbers.

    Args:
        model: a two-tower model (`SilcModel`, a converted keras-hub / Hugging Face SigLIP or
            CLIP).
        suites: "imagenet,coco" or a list of names of `keras_silc.evaluation.suites.SUITES`.
        data_dir: the folder that holds the data sets (docs/evaluation.md).
        output_dir: where report.json, report.md and each suite's pictures (in a subfolder
            named after the suite) go.
        tokenizer: None for the model's own.
        batch_size: images (segmentation: windows) per model call; None for each suite's
            default (256 images; 16 windows of 448 px for segmentation).
        max_examples: only the first N examples of every suite (a quick check).
        verbose: progress bars and a line per suite when truthy.
        options: {suite name: {option: value}}: a suite's own settings, e.g.
            `{"imagenet": {"resize": "center_crop"}}`.
        model_name: how the report names the model (default: the model's class name).

    Returns:
        The report: {"model", "backend", "data_dir", "suites": {name: suite report}, ...}.
    """
    import keras

    from keras_silc.version import __version__

    names = parse_suites(suites)
    options = dict(options or {})
    extra = sorted(set(options) - set(names))
    if extra:
        raise ValueError(f"options for suites that are not run: {extra} (running {names}).")
    data_dir = check_data_dir(data_dir)
    output_dir = _check_output_dir(output_dir)
    functions = locate_all(names, data_dir, options)
    report = {
        "model": model_name or type(model).__name__,
        "backend": keras.backend.backend(),
        "keras_silc": __version__,
        "data_dir": os.path.abspath(data_dir),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "batch_size": batch_size,
        "max_examples": max_examples,
        "suites": {},
    }
    for index, name in enumerate(names, 1):
        if verbose:
            print(f"[{index}/{len(names)}] {name}", flush=True)
        suite_dir = os.path.join(output_dir, name)
        os.makedirs(suite_dir, exist_ok=True)
        start = time.time()
        result = functions[name](
            model,
            data_dir,
            tokenizer=tokenizer,
            max_examples=max_examples,
            output_dir=suite_dir,
            verbose=verbose,
            **({} if batch_size is None else {"batch_size": batch_size}),
            **options.get(name, {}),
        )
        if not isinstance(result, dict):
            raise TypeError(f"Suite {name!r} returned {type(result).__name__}, not a dict.")
        result = _jsonable(result)
        result.setdefault("seconds", round(time.time() - start, 2))
        result["pictures"] = _relative_pictures(result.get("pictures"), suite_dir, output_dir)
        if not os.listdir(suite_dir):
            os.rmdir(suite_dir)
        report["suites"][name] = result
        write_report(report, output_dir)
        if verbose:
            print(format_metrics(name, result), flush=True)
    return report


def locate_all(suites, data_dir, options=None):
    """{name: suite function} after finding every suite's data (through the suite's `locate`
    where it has one): a missing data set raises here, before any model work."""
    options = options or {}
    functions = {}
    for name in parse_suites(suites):
        function = resolve(name)
        locate = getattr(function, "locate", None)
        if locate is not None:
            source = options.get(name, {}).get("source")
            locate(check_data_dir(data_dir), **({"source": source} if source else {}))
        functions[name] = function
    return functions


def _check_output_dir(output_dir):
    if output_dir is None:
        raise ValueError("output_dir is required: where report.json and report.md go.")
    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"output_dir {output_dir!r} is a file, not a folder.")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(f"Cannot create output_dir {output_dir!r}: {error}") from None
    if not os.access(output_dir, os.W_OK):
        raise ValueError(f"output_dir {output_dir!r} is not writable.")
    return output_dir


def _jsonable(value):
    """Plain JSON types of numpy scalars and arrays, tuples and nested dicts."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return str(value)


def _relative_pictures(pictures, suite_dir, output_dir):
    """{title: path relative to the report folder} of a suite's pictures (absolute paths, or
    relative to the suite's folder)."""
    if not pictures:
        return {}
    if isinstance(pictures, list | tuple):
        pictures = {os.path.splitext(os.path.basename(p))[0]: p for p in pictures}
    out = {}
    for title, path in pictures.items():
        path = path if os.path.isabs(path) else os.path.join(suite_dir, path)
        out[str(title)] = os.path.relpath(path, output_dir)
    return out


def metrics_of(result):
    """The numbers of a suite's report that go into the table."""
    metrics = result.get("metrics")
    if not isinstance(metrics, dict):  # a suite without a "metrics" entry: its top-level numbers
        metrics = {k: v for k, v in result.items() if k != "seconds"}
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


def _percent(value):
    return "nan" if not math.isfinite(value) else f"{100 * value:.2f}"


def format_metrics(name, result):
    metrics = metrics_of(result)
    return f"{name}: " + ", ".join(f"{k} {_percent(v)}" for k, v in metrics.items())


def markdown(report):
    """report.md's text: a table of every suite's metrics (in %), then each suite's settings
    and pictures."""
    lines = ["# keras-silc evaluation", ""]
    for key in ("model", "backend", "keras_silc", "data_dir", "date", "batch_size"):
        lines.append(f"- {key}: {report.get(key)}")
    if report.get("max_examples"):
        lines.append(
            f"- max_examples: {report['max_examples']} (a quick check on the first examples, "
            "not the full protocol)"
        )
    lines += ["", "| suite | data | metric | value (%) |", "|---|---|---|---:|"]
    for name, result in report["suites"].items():
        for metric, value in metrics_of(result).items():
            lines.append(f"| {name} | {result.get('data', '')} | {metric} | {_percent(value)} |")
    for name, result in report["suites"].items():
        lines += ["", f"## {name}", ""]
        if result.get("task"):
            lines.append(f"{result['task']} on {result.get('data', name)}.")
            lines.append("")
        for key, value in (result.get("settings") or {}).items():
            lines.append(f"- {key}: {value}")
        if result.get("seconds") is not None:
            lines.append(f"- seconds: {result['seconds']}")
        for title, path in (result.get("pictures") or {}).items():
            lines += ["", f"![{title}]({path})"]
    return "\n".join(lines) + "\n"


def write_report(report, output_dir):
    """report.json and report.md in `output_dir`, each written whole then renamed into place."""
    for name, text in (
        ("report.json", json.dumps(report, indent=2)),
        ("report.md", markdown(report)),
    ):
        path = os.path.join(output_dir, name)
        temporary = f"{path}.partial"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
