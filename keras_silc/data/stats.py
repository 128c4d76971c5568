"""Counts of skipped data: bad records never stop a run and are never silent."""

import contextlib
import logging
import threading

import keras
import tensorflow as tf

logger = logging.getLogger("keras_silc.data")

# What a pipeline can skip, and why.
REASONS = {
    "undecodable_images": "image bytes that do not decode (corrupt, truncated, unknown format)",
    "empty_captions": "examples whose captions are all empty",
    "truncated_shards": "shards (tar / TFRecord files) that end early or fail to read",
    "incomplete_samples": "WebDataset samples without an image or without a caption",
}


class DataStats:
    """Thread-safe counters shared by a source and the pipeline built on it.

    Counts made inside tf.data functions live in `tf.Variable`s; counts made by Python
    readers are plain integers. `as_dict()` reads both. Undecodable images are counted as
    gaps in the stream's example numbers after the (order-keeping) decoder drops them, so
    the count is exact, never an estimate from elements in flight (a drop is counted when
    the next good example arrives, so drops at the very end of a non-repeating stream are
    not). A bad example is counted each time the stream meets it (once per epoch).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._python_counts = {"truncated_shards": 0, "incomplete_samples": 0, "records": 0}
        with tf.init_scope():
            self._last_index = tf.Variable(-1, dtype=tf.int64, trainable=False)
            self._decoded = tf.Variable(0, dtype=tf.int64, trainable=False)
            self._undecodable = tf.Variable(0, dtype=tf.int64, trainable=False)
            self._empty_captions = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._reported = {}

    # Python side (readers).
    def add(self, name, count=1):
        with self._lock:
            self._python_counts[name] = self._python_counts.get(name, 0) + count

    @contextlib.contextmanager
    def uncounted(self):
        """The readers' counts made inside are dropped (a look at the first examples)."""
        with self._lock:
            saved = dict(self._python_counts)
        try:
            yield
        finally:
            with self._lock:
                self._python_counts = saved

    # tf.data side.
    def count_decoded(self, index, element):
        """Counts a decoded example and the examples dropped since the previous one.

        Must follow an order-keeping decode stage over `Dataset.enumerate()` numbers. A number
        at or below the last one means a new iterator over the dataset started from 0.
        """
        last = self._last_index.read_value()
        self._undecodable.assign_add(tf.where(index > last, index - last - 1, index))
        self._last_index.assign(index)
        self._decoded.assign_add(1)
        return index, element

    def count_empty_caption(self):
        return self._empty_captions.assign_add(1)

    def as_dict(self):
        with self._lock:
            counts = dict(self._python_counts)
        counts["examples_decoded"] = int(self._decoded.numpy())
        counts["undecodable_images"] = int(self._undecodable.numpy())
        counts["empty_captions"] = int(self._empty_captions.numpy())
        return counts

    def skipped(self):
        counts = self.as_dict()
        return {name: counts.get(name, 0) for name in REASONS}

    def report(self):
        """Logs a warning for every kind of skip that grew since the last report."""
        skipped = self.skipped()
        grown = {k: v for k, v in skipped.items() if v > self._reported.get(k, 0)}
        if grown:
            logger.warning(
                "keras_silc.data skipped bad data: %s.",
                ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in grown.items()),
            )
        self._reported = skipped
        return skipped

    def __repr__(self):
        return f"DataStats({self.as_dict()})"


class DataStatsCallback(keras.callbacks.Callback):
    """Puts the pipeline's skip counts into the epoch logs and warns when they grow.

    `model.fit(dataset, callbacks=[DataStatsCallback(dataset.stats)])`: the counts appear
    in the History (`data/undecodable_images`, ...) and in TensorBoard.
    """

    def __init__(self, stats):
        super().__init__()
        stats = getattr(stats, "stats", stats)  # the dataset itself is taken too
        if not isinstance(stats, DataStats):
            raise TypeError(
                "DataStatsCallback takes the pipeline's counts, dataset.stats (a DataStats), "
                f"got {type(stats).__name__}."
            )
        self.stats = stats

    def on_epoch_end(self, epoch, logs=None):
        skipped = self.stats.report()
        if logs is not None:
            logs.update({f"data/{name}": float(count) for name, count in skipped.items()})
