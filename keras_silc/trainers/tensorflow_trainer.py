"""TensorFlow: GradientTape inside the tf.function that `fit` builds."""

import tensorflow as tf

from keras_silc.distribution import check_distribution_support
from keras_silc.trainers.common import unpack_batch


class TensorFlowSilcTrainer:
    def train_step(self, data):
        check_distribution_support()  # refuse replica-local negatives and centers
        batch = unpack_batch(data)
        self.validate_batch(batch)
        with tf.GradientTape() as tape:
            _, aux = self.compute_losses(batch)
            scaled = self.optimizer.scale_loss(aux["loss"])
        trainable = self.trainable_variables
        grads = tape.gradient(scaled, trainable)
        self.optimizer.apply(grads, trainable)
        return self.update_state_after_step(aux)

    def test_step(self, data):
        batch = unpack_batch(data)
        self.validate_batch(batch)
        _, aux = self.compute_losses(batch)
        return self.update_metrics(aux)
