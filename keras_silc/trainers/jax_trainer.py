"""JAX: a stateless, jit-compiled step. All state travels in and out of `state`."""

import jax
import keras

from keras_silc.trainers.common import TrainerCommon
from keras_silc.trainers.common import scaled_steps
from keras_silc.trainers.micro_batches import MicroBatches


def _values(scope, variables):
    """Current values of `variables` in a StatelessScope (updated or as mapped)."""
    return [scope.get_current_value(v) for v in variables]


class JaxSilcTrainer(MicroBatches, TrainerCommon):
    # Keras's JAX loops detach ("purge") the variables' values at the first step and put
    # them back from the step's output state; a step that fails before it has one (an error
    # while tracing, e.g. a batch that fails its check) would leave every variable unset,
    # and the model unusable. The values taken are kept to put back in that case.
    def _get_jax_state(
        self,
        trainable_variables=False,
        non_trainable_variables=False,
        optimizer_variables=False,
        metrics_variables=False,
        purge_model_variables=False,
    ):
        if purge_model_variables:
            groups = (
                (trainable_variables, self.trainable_variables),
                (non_trainable_variables, self.non_trainable_variables),
                (optimizer_variables, getattr(getattr(self, "optimizer", None), "variables", [])),
                (metrics_variables, self.metrics_variables),
            )
            detached = [(v, v.value) for on, group in groups if on for v in group]
            # Not a tracked attribute: Keras would count a list of variables as the model's.
            object.__setattr__(self, "_detached_values", detached)
        return super()._get_jax_state(
            trainable_variables,
            non_trainable_variables,
            optimizer_variables,
            metrics_variables,
            purge_model_variables,
        )

    def _reattach_detached_values(self):
        for variable, value in getattr(self, "_detached_values", ()):
            if variable._value is None:  # still detached: no step gave it a value
                variable.assign(value)
        object.__setattr__(self, "_detached_values", [])

    def fit(self, *args, **kwargs):
        try:
            return super().fit(*args, **kwargs)
        finally:
            self._reattach_detached_values()

    def evaluate(self, *args, **kwargs):
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self._reattach_detached_values()

    def predict(self, *args, **kwargs):
        try:
            return super().predict(*args, **kwargs)
        finally:
            self._reattach_detached_values()

    def _mapping(self, trainable, non_trainable):
        mapping = list(zip(self.trainable_variables, trainable, strict=True))
        return mapping + list(zip(self.non_trainable_variables, non_trainable, strict=True))

    def _losses_stateless(self, trainable, non_trainable, batch, training=True):
        with keras.StatelessScope(state_mapping=self._mapping(trainable, non_trainable)) as scope:
            loss, aux = self.compute_losses(batch, training=training)
        return loss, aux, _values(scope, self.non_trainable_variables)

    def _scale_loss(self, optimizer_values, loss):
        with keras.StatelessScope(zip(self.optimizer.variables, optimizer_values, strict=True)):
            return self.optimizer.scale_loss(loss)

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_values, metric_values = state
        batch = self.prepare_batch(data)

        if self.gradient_accumulation_steps > 1:
            grads, aux, non_trainable = self._accumulate_gradients(
                trainable, non_trainable, optimizer_values, batch
            )
        else:

            def scaled_loss(trainable):
                loss, aux, new_non_trainable = self._losses_stateless(
                    trainable, non_trainable, batch
                )
                return self._scale_loss(optimizer_values, loss), (aux, new_non_trainable)

            (_, (aux, non_trainable)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(
                trainable
            )
        new_trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, grads, trainable
        )
        trainable = scaled_steps(trainable, new_trainable, self.learning_rate_scales())
        mapping = self._mapping(trainable, non_trainable)
        mapping += list(zip(self.metrics_variables, metric_values, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self.update_state_after_step(aux)
        non_trainable = _values(scope, self.non_trainable_variables)
        metric_values = _values(scope, self.metrics_variables)
        return logs, (trainable, non_trainable, optimizer_values, metric_values)

    def _accumulate_gradients(self, trainable, non_trainable, optimizer_values, batch):
        """The full batch's gradients in micro-batches (see `SilcModel`); a `lax.scan`
        over micro-batches, so only one micro-batch's activations are live at a time."""
        micro = self.split_micro_batches(batch)
        with keras.StatelessScope(state_mapping=self._mapping(trainable, non_trainable)):
            image_embeddings, text_embeddings = self.micro_batch_embeddings(micro)

        # The contrastive loss of the whole batch: gradients for the embeddings and for
        # the weights it alone touches (temperature, bias).
        positions = [
            next(i for i, v in enumerate(self.trainable_variables) if v is variable)
            for variable in self.contrastive_variables()
        ]

        def contrastive(image_embeddings, text_embeddings, values):
            current = list(trainable)
            for position, value in zip(positions, values, strict=True):
                current[position] = value
            with keras.StatelessScope(state_mapping=self._mapping(current, non_trainable)):
                loss, aux = self.contrastive_terms(image_embeddings, text_embeddings)
            return loss, aux

        (_, contrastive_aux), (image_grads, text_grads, value_grads) = jax.value_and_grad(
            contrastive, argnums=(0, 1, 2), has_aux=True
        )(image_embeddings, text_embeddings, [trainable[p] for p in positions])
        grads = [jax.numpy.zeros_like(value) for value in trainable]
        for position, grad in zip(positions, value_grads, strict=True):
            grads[position] = self._scale_loss(optimizer_values, grad)

        steps = self.gradient_accumulation_steps
        image_grads = image_grads.reshape((steps, -1) + image_grads.shape[1:])
        text_grads = text_grads.reshape((steps, -1) + text_grads.shape[1:])

        # The carry holds the non-trainable state too: a batch-normalised head moves
        # its statistics once per micro-batch, as on the other backends.
        def micro_step(carry, inputs):
            grads, non_trainable = carry
            micro_batch, image_grad, text_grad = inputs

            def objective(trainable):
                mapping = self._mapping(trainable, non_trainable)
                with keras.StatelessScope(state_mapping=mapping) as scope:
                    value, aux = self.micro_batch_objective(micro_batch, image_grad, text_grad)
                new_state = _values(scope, self.non_trainable_variables)
                return self._scale_loss(optimizer_values, value), (aux, new_state)

            micro_grads, (aux, non_trainable) = jax.grad(objective, has_aux=True)(trainable)
            grads = [g + m for g, m in zip(grads, micro_grads, strict=True)]
            return (grads, non_trainable), aux

        (grads, non_trainable), micro_aux = jax.lax.scan(
            micro_step, (grads, non_trainable), (micro, image_grads, text_grads)
        )
        return grads, self.combine_micro_batch_aux(contrastive_aux, micro_aux), non_trainable

    def test_step(self, state, data):
        trainable, non_trainable, metric_values = state
        batch = self.prepare_batch(data)
        _, aux, non_trainable = self._losses_stateless(
            trainable, non_trainable, batch, training=False
        )
        with keras.StatelessScope(zip(self.metrics_variables, metric_values, strict=True)) as scope:
            logs = self.update_metrics(aux)
        return logs, (trainable, non_trainable, _values(scope, self.metrics_variables))
