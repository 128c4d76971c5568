"""JAX: a stateless, jit-compiled step. All state travels in and out of `state`."""

import jax
import keras

from keras_silc.trainers.common import unpack_batch


def _values(scope, variables):
    """Current values of `variables` in a StatelessScope (updated or as mapped)."""
    return [scope.get_current_value(v) for v in variables]


class JaxSilcTrainer:
    def _losses_stateless(self, trainable, non_trainable, batch):
        mapping = list(zip(self.trainable_variables, trainable, strict=True))
        mapping += list(zip(self.non_trainable_variables, non_trainable, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, aux = self.compute_losses(batch)
        return loss, aux, _values(scope, self.non_trainable_variables)

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_values, metric_values = state
        batch = unpack_batch(data)
        self.validate_batch(batch)

        def scaled_loss(trainable):
            loss, aux, new_non_trainable = self._losses_stateless(trainable, non_trainable, batch)
            with keras.StatelessScope(zip(self.optimizer.variables, optimizer_values, strict=True)):
                scaled = self.optimizer.scale_loss(loss)
            return scaled, (aux, new_non_trainable)

        (_, (aux, non_trainable)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(trainable)
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, grads, trainable
        )
        mapping = list(zip(self.trainable_variables, trainable, strict=True))
        mapping += list(zip(self.non_trainable_variables, non_trainable, strict=True))
        mapping += list(zip(self.metrics_variables, metric_values, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self.update_state_after_step(aux)
        non_trainable = _values(scope, self.non_trainable_variables)
        metric_values = _values(scope, self.metrics_variables)
        return logs, (trainable, non_trainable, optimizer_values, metric_values)

    def test_step(self, state, data):
        trainable, non_trainable, metric_values = state
        batch = unpack_batch(data)
        self.validate_batch(batch)
        _, aux, non_trainable = self._losses_stateless(trainable, non_trainable, batch)
        with keras.StatelessScope(zip(self.metrics_variables, metric_values, strict=True)) as scope:
            logs = self.update_metrics(aux)
        return logs, (trainable, non_trainable, _values(scope, self.metrics_variables))
