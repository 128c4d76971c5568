"""`keras-silc train` on one's own data: WebDataset keys, a tokenizer that fits the text tower,
validation pairs (retrieval, zero-shot), TensorBoard every N steps, a finished run continued
for more steps, outputs on a bucket (TensorFlow's in-memory `ram://` stands in for `gs://`),
and every flag that does not apply refused."""

import csv
import io
import json
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from keras_silc import PRESETS
from keras_silc import cli
from keras_silc import data
from keras_silc import evaluation
from keras_silc import training
from keras_silc.callbacks import TensorBoardScalars
from keras_silc.experiments import fashion as demo
from keras_silc.experiments import own_data

SIZE = 16  # the image size of the runs: validation images are written at it (no resize)
TINY = [
    "--batch-size",
    "4",
    "--checkpoint-every",
    "1",
    "--quiet",
    "--set",
    f"vision.image_size={SIZE}",
    "--set",
    "local_crop_size=8",
    "--set",
    "num_local_crops=2",
    "--set",
    "vision.depth=1",
    "--set",
    "text.depth=1",
]


def _add(archive, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Training shards (jpg + txt) of Fashion scenes; a validation shard of single Fashion
    items (png at the run's size, "a <class>" captions, a .cls label); the class names."""
    folder = tmp_path_factory.mktemp("own")
    scenes = data.fashion_scenes("train", 16, 32, seed=0, class_only_captions=1.0)
    data.write_webdataset(str(folder / "train-{}.tar"), scenes["image"], list(scenes["caption"]), 8)
    items = data.fashion_items("test", 8, SIZE, seed=0)
    images = items["image"]
    names = [name.split("/")[0] for name in data.FASHION_CLASSES]
    captions = [f"a {names[label]}" for label in items["label"]]
    with tarfile.open(folder / "val.tar", "w") as archive:
        for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
            _add(archive, f"{i:05d}.png", tf.io.encode_png(image).numpy())
            _add(archive, f"{i:05d}.txt", caption.encode())
            _add(archive, f"{i:05d}.cls", str(int(items["label"][i])).encode())
    (folder / "classes.txt").write_text("\n".join(names) + "\n")
    return {
        "train": str(folder / "train-*.tar"),
        "val": str(folder / "val.tar"),
        "classes": str(folder / "classes.txt"),
        "names": names,
        "images": images,
        "captions": captions,
        "labels": np.asarray(items["label"], np.int64),
    }


def _scalars(folder):
    """{tag: {step: value}} of the TensorBoard event files in `folder` (any gfile path)."""
    values = {}
    for path in tf.io.gfile.glob(f"{folder}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalar = float(tf.make_ndarray(value.tensor))
                values.setdefault(value.tag, {})[event.step] = scalar
    return values


def _csv(path):
    return list(csv.DictReader(io.StringIO(tf.io.gfile.GFile(path).read())))


def _rsqrt_rate(iteration, base, warmup, cooldown, total, timescale=10_000):
    """The paper's schedule (big_vision's rsqrt with linear warm-up and cool-down), by hand."""
    rate = base
    if iteration > warmup:
        rate /= np.sqrt((iteration - warmup + timescale) / timescale)
    if warmup:
        rate *= min(1.0, iteration / warmup)
    if cooldown:
        rate *= np.clip((total - iteration) / cooldown, 0.0, 1.0)
    return rate


def test_own_data_with_validation_and_a_continued_run_on_a_bucket(own, tmp_path, capsys):
    output = f"ram://{tmp_path.name}/run"
    args = [
        "train",
        "--data",
        "webdataset",
        "--data-path",
        own["train"],
        "--image-key",
        "jpg;png",
        "--val-data",
        own["val"],
        "--val-class-names",
        own["classes"],
        "--val-label-key",
        "cls",
        "--eval-every",
        "1",
        "--log-every",
        "1",
        "--output",
        output,
        *TINY,
    ]
    assert cli.main([*args, "--steps", "2"]) == 0
    first_run = _scalars(f"{output}/tensorboard/train")["learning_rate"]
    # Continued for more steps: the schedule of a 4-step run from step 2 on.
    assert cli.main([*args, "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert '"resumed_from_step": 2' in out and "Continuing to step 4" in out
    assert not os.path.exists("ram:") and not os.path.exists(output)

    # Checkpoints, records and TensorBoard are all in the bucket, with no partial file.
    checkpoints = tf.io.gfile.listdir(f"{output}/checkpoints")
    assert sorted(checkpoints) == ["epoch-00003.keras", "epoch-00004.keras"]
    history = _csv(f"{output}/history.csv")
    assert [int(row["epoch"]) for row in history] == [0, 1, 2, 3]
    model = training.load_model_checked(f"{output}/model.keras")
    assert int(np.asarray(model.optimizer.iterations)) == 4
    assert model.recipe["total_steps"] == 4
    # The tower embeds the vocabulary learned, at most the preset's.
    vocabulary = model.tokenizer.vocabulary_size
    assert model.text_encoder.vocabulary_size == vocabulary <= 256

    # TensorBoard every step: the step's loss, and the learning rate of each run's schedule.
    train = _scalars(f"{output}/tensorboard/train")
    np.testing.assert_allclose(
        [train["loss"][step] for step in (1, 2, 3, 4)],
        [float(row["loss"]) for row in history],
        rtol=1e-6,
    )
    base = PRESETS["silc_tiny"]["config"]["recipe"]["learning_rate"]
    # recipe_for(steps): warm-up 10%, cool-down 20% of the steps (at least one each from 2 on).
    expected = [_rsqrt_rate(i, base, 1, 1, 2) for i in (0, 1)]
    expected += [_rsqrt_rate(i, base, 1, 1, 4) for i in (2, 3)]
    np.testing.assert_allclose([first_run[s] for s in (1, 2)], expected[:2], rtol=1e-6)
    np.testing.assert_allclose([train["learning_rate"][s] for s in (1, 2, 3, 4)], expected, 1e-6)
    assert expected[2] > 0.9 * base  # not the first schedule's 0 after its cool-down

    # Validation every step, into the records and TensorBoard.
    rows = _csv(f"{output}/validation.csv")
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4]
    metrics = [f"retrieval/{d}_recall@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]
    metrics += ["zero_shot/top1", "zero_shot/top5"]
    assert sorted(rows[0]) == sorted(["step", *metrics])
    validation = _scalars(f"{output}/tensorboard/validation")
    for metric in metrics:
        assert sorted(validation[metric]) == [1, 2, 3, 4]
        assert validation[metric][4] == pytest.approx(float(rows[-1][metric]))
    # The last one is the final model's on the pairs as written: the images (at the run's
    # size, so no resize), the captions, the .cls labels.
    reference = evaluation.retrieval(model, None, own["images"], own["captions"])
    zero_shot = evaluation.zero_shot_classification(
        model, None, own["images"], own["labels"], own["names"]
    )
    reference.update({f"zero_shot/{k}": v for k, v in zero_shot.items()})
    reference = {k if "/" in k else f"retrieval/{k}": v for k, v in reference.items()}
    assert {m: float(rows[-1][m]) for m in metrics} == pytest.approx(reference, abs=1e-9)

    # A run is continued, never cut short.
    assert cli.main([*args, "--steps", "2"]) == 2
    assert "past the 2 steps asked for" in capsys.readouterr().err


def test_every_flag_that_does_not_apply_is_refused(own, tmp_path, capsys):
    output = str(tmp_path / "run")
    mine = ["--data", "webdataset", "--data-path", own["train"]]
    val = [*mine, "--val-data", own["val"]]
    # (flags, the rule's reason) for every rule of the table.
    cases = [
        (["--data-path", "x"], "fashion_scenes is made offline"),
        (["--image-key", "jpg"], "fashion_scenes has no fields"),
        (["--caption-key", "txt"], "fashion_scenes has no fields"),
        ([*mine, "--num-scenes", "8"], "it sizes fashion_scenes, not --data webdataset"),
        ([*mine, "--class-only-captions", "1"], "it captions fashion_scenes"),
        (["--fashion-evaluation"], "follows training anyway"),
        ([*val, "--fashion-evaluation", "--skip-evaluation"], "that --skip-evaluation skips"),
        ([*mine, "--skip-evaluation"], "no evaluation follows training on --data webdataset"),
        (["--skip-evaluation", "--eval-items", "9"], "it sizes the Fashion-MNIST evaluation"),
        ([*mine, "--eval-scenes", "9"], "it sizes the Fashion-MNIST evaluation"),
        (["--tokenizer", "v.txt", "--vocabulary-size", "64"], "brings its own vocabulary"),
        (["--tokenizer", "v.txt", "--tokenizer-sample", "64"], "brings its own vocabulary"),
        (["--val-data", own["val"]], "--val-data holds validation pairs of your own --data"),
        ([*mine, "--val-size", "4"], "it sizes --val-data"),
        ([*mine, "--eval-every", "4"], "it times the --val-data evaluation"),
        ([*mine, "--val-class-names", own["classes"]], "zero-shot classification runs on"),
        ([*val, "--val-label-key", "cls"], "among --val-class-names, which is not given"),
        (["--init-from", "x", "--preset", "silc_tiny"], "--init-from brings the architecture"),
        (["--init-from", "x", "--tokenizer", "v.txt"], "brings the pretrained model's own"),
        (["--init-from", "x", "--vocabulary-size", "64"], "brings the pretrained model's own"),
        (["--init-from", "x", "--tokenizer-sample", "64"], "brings the pretrained model's own"),
        (["--unlocked-image-blocks", "1"], "without --lock-image every block of the image"),
        (["--unlocked-text-blocks", "1"], "(to lock the text tower but for its last N blocks"),
    ]
    refused = set()
    for flags, reason in cases:
        assert cli.main(["train", "--output", output, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert "does not apply" in err and reason in err, (flags, err)
        refused.add(err.split("error: ")[1].split(" does not apply")[0])
    # Every rule has its case; nothing was written.
    assert refused == {flag for flag, *_ in cli.FLAG_RULES}
    assert not os.path.exists(os.path.join(output, "run_config.json"))
    # A WebDataset key the shards do not have is refused, not ignored.
    assert cli.main(["train", "--output", output, *mine, "--image-key", "tif"]) == 2
    assert "has image_key='tif'; their files have the extensions ['jpg', 'txt']" in (
        capsys.readouterr().err
    )


def test_the_vocabulary_comes_from_the_text_tower_and_must_fit_it(
    own, tmp_path, capsys, monkeypatch
):
    trained = []

    class Stop(Exception):
        pass

    def spy(captions, vocabulary_size, sequence_length, model_type="unigram"):
        trained.append((len(captions), vocabulary_size, model_type))
        raise Stop()

    monkeypatch.setattr(data.SilcTokenizer, "from_captions", spy)
    args = ["train", "--output", str(tmp_path / "run"), "--data", "webdataset"]
    args += ["--data-path", own["train"]]
    for flags, size in (
        ([], 256),  # silc_tiny's text tower
        (["--set", "text.vocabulary_size=64"], 64),
        (["--preset", "silc_b16"], 32_000),
        (["--vocabulary-size", "100"], 100),
    ):
        with pytest.raises(Stop):
            cli.main([*args, *flags, "--tokenizer-sample", "5"])
        # The first 5 captions of the shards.
        assert trained.pop() == (5, size, "wordpiece"), flags
    with pytest.raises(Stop):
        cli.main(args)
    assert trained.pop()[0] == 16  # every caption: fewer than the default sample
    assert own_data.TOKENIZER_SAMPLE == 100_000
    monkeypatch.undo()

    assert cli.main([*args, "--vocabulary-size", "300"]) == 2
    assert (
        "--vocabulary-size 300 does not fit the text tower, which embeds 256 tokens (the preset "
        "silc_tiny): lower --vocabulary-size, or add --set text.vocabulary_size=300."
    ) in capsys.readouterr().err
    vocabulary = tmp_path / "vocabulary.txt"
    words = sorted(
        {w for c in demo.make_pairs("fashion_scenes", num_scenes=8)[1] for w in c.split()}
    )
    vocabulary.write_text(
        "\n".join(["[PAD]", "[UNK]", "[EOS]", *words] + [f"w{i}" for i in range(300)]) + "\n"
    )
    assert cli.main([*args, "--tokenizer", str(vocabulary)]) == 2
    assert "but the text tower embeds 256 (the preset silc_tiny). Add --set" in (
        capsys.readouterr().err
    )


def test_classes_come_from_a_label_key_or_the_caption():
    names = ["T-shirt", "bag", "sneaker"]
    arrays = {
        "caption": np.array([["a bag", ""], ["Sneaker ", "x"], ["t-shirt", ""]], dtype=object),
        "label": np.array(["1", "sneaker", "0"], dtype=object),
    }
    np.testing.assert_array_equal(own_data.class_indices(arrays, names, "cls"), [1, 2, 0])
    with pytest.raises(ValueError, match=r"1 of 3 .* e.g. \['a bag'\], read from the first"):
        own_data.class_indices(arrays, names)
    arrays["caption"][0, 0] = "BAG"
    np.testing.assert_array_equal(own_data.class_indices(arrays, names), [1, 2, 0])
    arrays["label"][0] = "3"
    with pytest.raises(ValueError, match=r"an index from 0 to 2"):
        own_data.class_indices(arrays, names, "cls")


class _Optimizer:
    def __init__(self, schedule):
        self._learning_rate = schedule


class _Model:
    def __init__(self, schedule):
        self.optimizer = _Optimizer(schedule)


def test_tensorboard_points_are_means_over_the_steps_since_the_previous_point(tmp_path):
    from keras_silc import RsqrtSchedule

    # Per-step losses of 3 epochs of 4 steps; Keras's logs are running means per epoch.
    losses = np.random.default_rng(0).uniform(1, 5, 12)
    schedule = RsqrtSchedule(1e-3, warmup_steps=2, cooldown_steps=3, total_steps=12)
    for every in (1, 3, 5):
        callback = TensorBoardScalars(str(tmp_path / str(every)), every)
        callback.set_params({"steps": 4})
        callback.set_model(_Model(schedule))
        callback.on_train_begin()
        for epoch in range(3):
            callback.on_epoch_begin(epoch)
            for batch in range(4):
                mean = losses[4 * epoch : 4 * epoch + batch + 1].mean()
                callback.on_train_batch_end(batch, {"loss": mean})
            callback.on_epoch_end(epoch, {"loss": losses[4 * epoch : 4 * epoch + 4].mean()})
        callback.on_train_end()
        logged = _scalars(str(tmp_path / str(every)))
        steps = list(range(every, 13, every))
        assert sorted(logged["loss"]) == steps
        expected = [losses[step - every : step].mean() for step in steps]
        np.testing.assert_allclose([logged["loss"][s] for s in steps], expected, rtol=1e-5)
        rates = [_rsqrt_rate(step - 1, 1e-3, 2, 3, 12) for step in steps]
        np.testing.assert_allclose([logged["learning_rate"][s] for s in steps], rates, 1e-5)


def test_a_run_shorter_than_its_checkpoint_interval_is_continued_on_its_interval():
    import argparse

    args = argparse.Namespace(checkpoint_every=50, steps=40)
    assert cli._checkpoint_interval(args, None) == 40
    # A first run of 20 steps checkpointed once, at 20: continued, it keeps that interval.
    assert cli._checkpoint_interval(args, {"steps": 20, "checkpoint_every": 20}) == 20
    assert cli._checkpoint_interval(args, {"steps": 100, "checkpoint_every": 50}) == 40
    args.steps = 30
    with pytest.raises(ValueError, match="use a multiple of 20, e.g. --steps 40"):
        cli._checkpoint_interval(args, {"steps": 20, "checkpoint_every": 20})


def test_skipped_records_are_counted_in_the_summary_and_warned_about(own, tmp_path, capsys, caplog):
    # A shard of good samples with one corrupt image and one empty caption among them.
    shard = tmp_path / "bad-00000.tar"
    good = [tf.io.encode_jpeg(image).numpy() for image in own["images"][:6]]
    with tarfile.open(shard, "w") as archive:
        for i, jpeg in enumerate(good):
            _add(archive, f"{i:05d}.jpg", jpeg)
            _add(archive, f"{i:05d}.txt", own["captions"][i].encode())
        _add(archive, "00006.jpg", good[0][: len(good[0]) // 3])  # truncated
        _add(archive, "00006.txt", b"a truncated image")
        _add(archive, "00007.jpg", good[1])
        _add(archive, "00007.txt", b"")  # empty caption
    output = str(tmp_path / "run")
    args = ["train", "--data", "webdataset", "--data-path", str(shard), "--output", output]
    with caplog.at_level("WARNING", logger="keras_silc.data"):
        assert cli.main([*args, "--steps", "2", *TINY, "--tokenizer-sample", "8"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    skipped = summary["skipped_data"]
    assert skipped["undecodable_images"] >= 1 and skipped["empty_captions"] >= 1, skipped
    assert "skipped bad data" in caplog.text
    # And per epoch in history.csv.
    assert any(float(row["data/undecodable_images"]) >= 1 for row in _csv(f"{output}/history.csv"))


def test_a_missing_csv_column_is_named_without_quotes_and_with_the_flags(tmp_path, capsys):
    table = tmp_path / "pairs.csv"
    table.write_text("file,text\na.jpg,a red bag\n")
    args = ["train", "--data", "csv", "--data-path", str(table), "--output", str(tmp_path / "r")]
    assert cli.main([*args, "--steps", "2", *TINY]) == 2
    err = capsys.readouterr().err
    assert "keras-silc: error: --data-path: Column 'image' not found" in err, err
    assert "--image-key, --caption-key" in err and "Traceback" not in err


def test_a_missing_shard_names_its_flag_and_leaves_no_output_folder(own, tmp_path, capsys):
    output = tmp_path / "run"
    args = ["train", "--data", "webdataset", "--output", str(output), "--steps", "2", *TINY]
    missing = str(tmp_path / "none" / "{0..1}.tar")
    cases = [
        (["--data-path", missing], "error: --data-path: The WebDataset shard"),
        (["--data-path", own["train"], "--val-data", missing], "error: --val-data: The WebDat"),
    ]
    for flags, message in cases:
        assert cli.main([*args, *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not output.exists()
