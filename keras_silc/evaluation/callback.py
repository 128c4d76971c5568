"""Evaluations during training, into the History and TensorBoard."""

import keras


class EvaluationCallback(keras.callbacks.Callback):
    """Runs `evaluations` (name -> fn(model) -> dict of floats) every N epochs or steps.

    Results are written into the epoch logs as "<name>/<metric>" (so into History, CSVLogger
    and Keras's TensorBoard callback when it comes later in the list) and, with `log_dir`, as
    TensorBoard scalars at the current optimizer step.

        EvaluationCallback({"zero_shot": lambda m: zero_shot_classification(m, ...)},
                           every_n_epochs=1, log_dir="runs/x/tensorboard")
    """

    def __init__(self, evaluations, every_n_epochs=1, every_n_steps=None, log_dir=None):
        super().__init__()
        self.evaluations = dict(evaluations)
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.log_dir = log_dir
        self.latest = {}
        self._writer = None

    def _run(self):
        results = {}
        for name, fn in self.evaluations.items():
            for key, value in fn(self.model).items():
                results[f"{name}/{key}"] = float(value)
        self.latest = results
        if self.log_dir:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            with self._writer.as_default():
                for key, value in results.items():
                    tf.summary.scalar(key, value, step=step)
            self._writer.flush()
        return results

    def on_train_batch_end(self, batch, logs=None):
        if self.every_n_steps:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            if step % self.every_n_steps == 0:
                self._run()

    def on_epoch_end(self, epoch, logs=None):
        if self.every_n_steps:
            results = self.latest
        elif self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            results = self._run()
        else:
            results = {}
        if logs is not None:
            logs.update(results)
