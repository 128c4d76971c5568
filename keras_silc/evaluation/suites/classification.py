"""Zero-shot classification suites: ImageNet-1k validation, CIFAR-10 and CIFAR-100 test.

The class names and templates are CLIP's (`prompts.py`); the classifier is
`keras_silc.evaluation.zero_shot_classification`: every template filled with a class name,
the normalised text embeddings averaged per class and renormalised (as open_clip's
`build_zero_shot_classifier` and big_vision's discriminative classifier), an image's class the
most similar one. Top-1 and top-5 accuracy.

Where the data is looked for (`data_dir` = DIR), in this order (`source="auto"`):

- ImageNet: DIR/imagenet/val/ or DIR/imagenet/validation/ with the 50,000 validation images
  in 1000 synset folders (n01440764/ ...); else TFDS `imagenet2012` split "validation".
- CIFAR-10: DIR/cifar-10-batches-py/test_batch (the "python version" archive extracted); else
  TFDS `cifar10` split "test". CIFAR-100: DIR/cifar-100-python/test; else TFDS `cifar100`.
"""

import dataclasses
import os
import re
import time

from keras_silc.evaluation.common import image_size
from keras_silc.evaluation.suites import data
from keras_silc.evaluation.suites import prompts
from keras_silc.evaluation.zero_shot import zero_shot_classification

_SYNSET = re.compile(r"^n\d{8}$")


@dataclasses.dataclass(frozen=True)
class ClassificationSet:
    title: str
    class_names: tuple
    templates: tuple
    tfds_name: str
    tfds_split: str
    folders: tuple  # candidates under data_dir: class folders, or CIFAR python batch files
    folder_kind: str  # "synset_folders" or "cifar_python"
    how_to: str
    cifar_label_key: bytes = b"labels"


IMAGENET = ClassificationSet(
    title="ImageNet-1k validation",
    class_names=prompts.IMAGENET_CLASS_NAMES,
    templates=prompts.IMAGENET_TEMPLATES,
    tfds_name="imagenet2012",
    tfds_split="validation",
    folders=("imagenet/val", "imagenet/validation"),
    folder_kind="synset_folders",
    how_to=(
        "download ILSVRC2012_img_val.tar from https://image-net.org (an account is needed), "
        "extract it to DIR/imagenet/val and sort the 50,000 images into their 1000 synset "
        "folders (n01440764/ ...; e.g. with the widely used valprep.sh); or put the ImageNet "
        "tar files in DIR/downloads/manual and run `tfds build imagenet2012 --data_dir DIR`."
    ),
)
CIFAR10 = ClassificationSet(
    title="CIFAR-10 test",
    class_names=prompts.CIFAR10_CLASS_NAMES,
    templates=prompts.CIFAR_TEMPLATES,
    tfds_name="cifar10",
    tfds_split="test",
    folders=("cifar-10-batches-py/test_batch", "cifar10/cifar-10-batches-py/test_batch"),
    folder_kind="cifar_python",
    how_to=(
        "extract cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html into "
        "DIR (giving DIR/cifar-10-batches-py/), or run `tfds build cifar10 --data_dir DIR`."
    ),
)
CIFAR100 = ClassificationSet(
    title="CIFAR-100 test",
    class_names=prompts.CIFAR100_CLASS_NAMES,
    templates=prompts.CIFAR_TEMPLATES,
    tfds_name="cifar100",
    tfds_split="test",
    folders=("cifar-100-python/test", "cifar100/cifar-100-python/test"),
    folder_kind="cifar_python",
    how_to=(
        "extract cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html into "
        "DIR (giving DIR/cifar-100-python/), or run `tfds build cifar100 --data_dir DIR`."
    ),
    cifar_label_key=b"fine_labels",
)


def _synset_folders(spec, root):
    paths, labels, classes = data.class_folder_files(root)
    wrong = [name for name in classes if not _SYNSET.match(name)]
    if len(classes) != len(spec.class_names) or wrong:
        raise ValueError(
            f"{root!r} must hold exactly {len(spec.class_names)} synset folders named by "
            f"WordNet id (n01440764, ...), whose sorted order is the label order; it holds "
            f"{len(classes)} folders{f', e.g. {wrong[:3]}' if wrong else ''}. Sort the "
            "validation images into their synset folders (see docs/evaluation.md)."
        )
    if not paths:
        raise ValueError(f"{root!r}: the synset folders hold no images ({data.IMAGE_EXTENSIONS}).")
    return data.Located(
        f"folder:{root}",
        len(paths),
        lambda size, resize: data.image_folder_dataset(paths, labels, size, resize),
    )


def _cifar_python(spec, path):
    images, labels = data.read_cifar_python(path, spec.cifar_label_key)
    return data.Located(
        f"folder:{path}",
        len(labels),
        lambda size, resize: data.array_dataset(images, labels, size, resize),
    )


def _tfds(spec, data_dir):
    dataset, count, source = data.tfds_dataset(spec.tfds_name, spec.tfds_split, data_dir)
    return data.Located(
        source,
        count,
        lambda size, resize: dataset.map(
            lambda e: {"image": data.prepare_image(e["image"], size, resize), "label": e["label"]},
            num_parallel_calls=data._tf().data.AUTOTUNE,
            deterministic=True,
        ),
    )


def locate(spec, data_dir, source="auto"):
    """The `Located` data of `spec` under `data_dir`, else `data.NotFound`."""
    data_dir = data.check_data_dir(data_dir)
    data.check_source(source)
    looked = []
    if source in ("auto", "folder"):
        kind = "dir" if spec.folder_kind == "synset_folders" else "file"
        path = data.first_existing(data_dir, spec.folders, kind)
        if path is not None:
            if spec.folder_kind == "synset_folders":
                return _synset_folders(spec, path)
            return _cifar_python(spec, path)
        looked += [os.path.join(data_dir, folder) for folder in spec.folders]
    if source in ("auto", "tfds"):
        try:
            return _tfds(spec, data_dir)
        except LookupError as error:
            looked.append(str(error.args[0]))
    raise data.NotFound(spec.title, looked, spec.how_to.replace("DIR", data_dir))


def run_zero_shot(
    spec,
    model,
    data_dir,
    *,
    tokenizer=None,
    batch_size=256,
    max_examples=None,
    output_dir=None,
    verbose=1,
    resize="squash",
    source="auto",
    class_names=None,
    templates=None,
):
    """The zero-shot report of one `ClassificationSet` (see the module docstring)."""
    del output_dir  # no pictures
    data.check_resize(resize)
    data.check_max_examples(max_examples)
    class_names = tuple(class_names or spec.class_names)
    templates = tuple(templates or spec.templates)
    if len(class_names) != len(spec.class_names):
        raise ValueError(
            f"{spec.title} has {len(spec.class_names)} classes; class_names has {len(class_names)}."
        )
    located = locate(spec, data_dir, source)
    size = image_size(model)
    dataset = located.build(size, resize)
    count = located.count
    if count is not None:
        dataset, count = data.finish(dataset, count, max_examples)
    elif max_examples is not None:
        dataset = dataset.take(max_examples)
    start = time.time()
    metrics = zero_shot_classification(
        model,
        tokenizer,
        dataset,
        class_names=class_names,
        templates=templates,
        batch_size=batch_size,
        verbose=bool(verbose),
    )
    seconds = time.time() - start
    return {
        "task": "zero-shot classification",
        "data": spec.title,
        "metrics": metrics,
        "settings": {
            "source": located.source,
            "num_examples": count,
            "max_examples": max_examples,
            "num_classes": len(class_names),
            "num_templates": len(templates),
            "class_names": "CLIP" if class_names == spec.class_names else "custom",
            "templates": "CLIP" if templates == spec.templates else "custom",
            "image_size": size,
            "resize": resize,
            "batch_size": batch_size,
        },
        "seconds": round(seconds, 2),
    }


def _suite(spec, doc):
    def run(
        model,
        data_dir,
        *,
        tokenizer=None,
        batch_size=256,
        max_examples=None,
        output_dir=None,
        verbose=1,
        resize="squash",
        source="auto",
        class_names=None,
        templates=None,
    ):
        return run_zero_shot(
            spec,
            model,
            data_dir,
            tokenizer=tokenizer,
            batch_size=batch_size,
            max_examples=max_examples,
            output_dir=output_dir,
            verbose=verbose,
            resize=resize,
            source=source,
            class_names=class_names,
            templates=templates,
        )

    run.__doc__ = doc + _ARGS
    run.locate = lambda data_dir, source="auto": locate(spec, data_dir, source)
    return run


_ARGS = """

    Args:
        model: a two-tower model (`SilcModel`, a converted keras-hub SigLIP / CLIP).
        data_dir: the folder that holds the data sets (see the module docstring).
        tokenizer: None for the model's own.
        batch_size: images (and prompts) per model call.
        max_examples: evaluate only the first N images (a quick check, not the protocol).
        output_dir: unused (no pictures).
        verbose: progress bars when truthy.
        resize: "squash" (big_vision's bilinear resize to the model's size) or
            "center_crop" (CLIP / open_clip: the shorter side bicubic, then a central crop).
        source: "auto" (the folder, else TFDS), "folder" or "tfds".
        class_names, templates: replace CLIP's lists (same number of classes).

    Returns:
        {"task", "data", "metrics": {"top1", "top5"}, "settings": {...}, "seconds"}.
    """
run_imagenet = _suite(
    IMAGENET, "Zero-shot top-1/top-5 on ImageNet-1k validation (CLIP's 1000 names, 80 templates)."
)
run_cifar10 = _suite(
    CIFAR10, "Zero-shot top-1/top-5 on CIFAR-10 test (CLIP's names, 18 templates)."
)
run_cifar100 = _suite(
    CIFAR100, "Zero-shot top-1/top-5 on CIFAR-100 test (CLIP's names, 18 templates)."
)
