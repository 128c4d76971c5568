"""TensorFlow: GradientTape inside the tf.function that `fit` builds."""

import tensorflow as tf

from keras_silc.distribution import check_distribution_support
from keras_silc.trainers.common import TrainerCommon
from keras_silc.trainers.common import apply_optimizer
from keras_silc.trainers.micro_batches import MicroBatches


def _zeros_for_none(grads, variables):
    return [
        tf.zeros(v.shape, v.dtype) if g is None else g
        for g, v in zip(grads, variables, strict=True)
    ]


class TensorFlowSilcTrainer(MicroBatches, TrainerCommon):
    def make_train_function(self, force=False):
        # Without a tf.distribute strategy Keras builds the optimizer inside the first trace;
        # tf.function then traces the whole step a second time because variables were created
        # in the first. Built here, the step is traced once (about 40% of a first fit on CPU).
        optimizer_unbuilt = self.optimizer is not None and not self.optimizer.built
        if optimizer_unbuilt and all(layer.built for layer in self._flatten_layers()):
            self.optimizer.build(self.trainable_variables)
        return super().make_train_function(force)

    def train_step(self, data):
        check_distribution_support()  # refuse replica-local negatives and centers
        batch = self.prepare_batch(data)
        trainable = self.trainable_variables
        if self.gradient_accumulation_steps > 1:
            grads, aux = self._accumulate_gradients(batch)
        else:
            with tf.GradientTape() as tape:
                _, aux = self.compute_losses(batch)
                scaled = self.optimizer.scale_loss(aux["loss"])
            grads = tape.gradient(scaled, trainable)
        apply_optimizer(self.optimizer, grads, trainable, self.learning_rate_scales())
        return self.update_state_after_step(aux)

    def _accumulate_gradients(self, batch):
        """The full batch's gradients in micro-batches (see `SilcModel`); a
        `tf.while_loop` over micro-batches, one at a time."""
        trainable = self.trainable_variables
        micro = self.split_micro_batches(batch)
        image_embeddings, text_embeddings = self.micro_batch_embeddings(micro)  # no tape
        variables = self.contrastive_variables()
        with tf.GradientTape() as tape:
            tape.watch([image_embeddings, text_embeddings])
            contrastive, contrastive_aux = self.contrastive_terms(image_embeddings, text_embeddings)
        image_grads, text_grads, *variable_grads = tape.gradient(
            contrastive, [image_embeddings, text_embeddings] + variables
        )
        scaled = {
            id(v): self.optimizer.scale_loss(g)
            for v, g in zip(variables, variable_grads, strict=True)
        }
        grads = [scaled.get(id(v), tf.zeros(v.shape, v.dtype)) for v in trainable]

        steps = self.gradient_accumulation_steps
        image_grads = tf.reshape(image_grads, [steps, -1] + image_grads.shape[1:].as_list())
        text_grads = tf.reshape(text_grads, [steps, -1] + text_grads.shape[1:].as_list())
        # The shapes of the per-micro-batch terms, from a trace in a graph of its own that
        # is never run (run, it would move a batch-normalised head's statistics once more).
        example = {key: value[0] for key, value in micro.items()}
        probe = tf.function(lambda *args: self.micro_batch_objective(*args)[1])
        traced = probe.get_concrete_function(example, image_grads[0], text_grads[0])
        aux_shapes = {key: value.shape for key, value in traced.structured_outputs.items()}

        def body(j, grads, aux_arrays):
            micro_batch = {key: value[j] for key, value in micro.items()}
            with tf.GradientTape() as tape:
                objective, aux = self.micro_batch_objective(
                    micro_batch, image_grads[j], text_grads[j]
                )
                scaled = self.optimizer.scale_loss(objective)
            micro_grads = _zeros_for_none(tape.gradient(scaled, trainable), trainable)
            grads = [g + m for g, m in zip(grads, micro_grads, strict=True)]
            aux_arrays = {key: aux_arrays[key].write(j, aux[key]) for key in aux_arrays}
            return j + 1, grads, aux_arrays

        aux_arrays = {
            key: tf.TensorArray(tf.float32, size=steps, element_shape=shape)
            for key, shape in aux_shapes.items()
        }
        _, grads, aux_arrays = tf.while_loop(
            lambda j, *_: j < steps,
            body,
            (tf.constant(0), grads, aux_arrays),
            parallel_iterations=1,
        )
        micro_aux = {key: array.stack() for key, array in aux_arrays.items()}
        return grads, self.combine_micro_batch_aux(contrastive_aux, micro_aux)

    def test_step(self, data):
        batch = self.prepare_batch(data)
        _, aux = self.compute_losses(batch, training=False)
        return self.update_metrics(aux)
