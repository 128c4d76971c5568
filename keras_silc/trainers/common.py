"""Helpers shared by the backend trainers."""


def unpack_batch(data):
    """`fit` hands over `x` or `(x,)` or `(x, y, ...)`; SILC batches are `x` alone."""
    if isinstance(data, (tuple, list)):
        if len(data) > 1 and data[1] is not None:
            raise ValueError(
                "SilcModel trains on batches with no targets: pass a dataset of dicts "
                "{'image', 'global_crops', 'local_crops', 'text'}, not (x, y) pairs."
            )
        data = data[0]
    return data
