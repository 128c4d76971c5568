"""The paper's benchmarks as named suites: `SUITES = {name: run}`.

Every suite is one function with this call signature:

    run(model, data_dir, *, tokenizer=None, batch_size=256, max_examples=None,
        output_dir=None, verbose=1, **options) -> dict

- `model`: a two-tower model (`SilcModel`, a converted keras-hub / Hugging Face SigLIP or CLIP:
  anything with `encode_image`, `encode_text` and, for segmentation, `dense_image_features`).
- `data_dir`: the folder holding the data sets, in the layouts of `docs/evaluation.md`; a suite
  reads its own data from it (a folder layout or a TFDS data set prepared there) and raises a
  `FileNotFoundError` that lists where it looked and how to get the data when it is missing.
  Nothing is downloaded.
- `tokenizer`: None for the model's own; `batch_size`: images per model call;
  `max_examples`: only the first N examples (a quick check, not the protocol);
  `output_dir`: the suite's own folder for pictures (None: make none); `verbose`: progress bars.
- `**options`: the suite's own keyword-only settings (e.g. `resize`, `source`).

It returns a JSON-serialisable report:

    {"task": str, "data": str,
     "metrics": {name: float},           # fractions in [0, 1]: the table of report.md
     "settings": {name: value},          # everything needed to reproduce the numbers
     "pictures": {title: path},          # optional: files written under output_dir
     "seconds": float, ...}              # optional; any other JSON keys go to report.json

Suites: zero-shot classification ("imagenet", "cifar10", "cifar100"), retrieval ("coco",
"flickr30k"), zero-shot segmentation ("ade20k", "pascal_context", "cityscapes", "pascal_voc",
"coco_stuff"). The segmentation suites live in `keras_silc.evaluation.suites.segmentation`
as `run_ade20k`, `run_pascal_context`, `run_cityscapes`, `run_pascal_voc`, `run_coco_stuff`
with the signature above; they are imported when first run. A suite function may carry a
`locate(data_dir, source="auto")` attribute that finds its data without running the model
(`run_suites` calls it for every requested suite first, so a missing data set stops the run
before any model work).
"""

import importlib

from keras_silc.evaluation.suites.classification import run_cifar10
from keras_silc.evaluation.suites.classification import run_cifar100
from keras_silc.evaluation.suites.classification import run_imagenet
from keras_silc.evaluation.suites.retrieval import run_coco
from keras_silc.evaluation.suites.retrieval import run_flickr30k

SEGMENTATION_MODULE = "keras_silc.evaluation.suites.segmentation"
SEGMENTATION_SUITES = ("ade20k", "pascal_context", "cityscapes", "pascal_voc", "coco_stuff")


def segmentation_suite(name):
    """`run_<name>` of the segmentation suites' module, else a NotImplementedError."""
    try:
        module = importlib.import_module(SEGMENTATION_MODULE)
    except ModuleNotFoundError as error:
        if error.name != SEGMENTATION_MODULE:
            raise
        raise NotImplementedError(
            f"The zero-shot segmentation suite {name!r} is not available in this version of "
            f"keras_silc ({SEGMENTATION_MODULE} is missing)."
        ) from None
    function = getattr(module, f"run_{name}", None)
    if function is None:
        raise NotImplementedError(f"{SEGMENTATION_MODULE} has no run_{name}.")
    return function


def _lazy(name):
    def run(model, data_dir, **kwargs):
        return segmentation_suite(name)(model, data_dir, **kwargs)

    run.__name__ = f"run_{name}"
    run.__doc__ = f"Zero-shot segmentation on {name}: `{SEGMENTATION_MODULE}.run_{name}`."
    run.lazy = True
    return run


SUITES = {
    "imagenet": run_imagenet,
    "cifar10": run_cifar10,
    "cifar100": run_cifar100,
    "coco": run_coco,
    "flickr30k": run_flickr30k,
    **{name: _lazy(name) for name in SEGMENTATION_SUITES},
}


def resolve(name):
    """The suite function of `name`, the real one for a lazily registered segmentation suite
    (so that its `locate` is reachable)."""
    function = SUITES[name]
    return segmentation_suite(name) if getattr(function, "lazy", False) else function


def parse_suites(suites):
    """["imagenet", "coco"] of "imagenet,coco" or a list of names; unknown names are a
    ValueError that lists the known ones."""
    if isinstance(suites, str):
        suites = suites.split(",")
    names = [str(name).strip() for name in suites if str(name).strip()]
    if not names:
        raise ValueError(f"No suite given; choose from {', '.join(SUITES)}.")
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        raise ValueError(f"Unknown suite(s) {unknown}; choose from {', '.join(SUITES)}.")
    return list(dict.fromkeys(names))  # in order, without repeats


__all__ = ["SEGMENTATION_SUITES", "SUITES", "parse_suites", "resolve", "segmentation_suite"]
