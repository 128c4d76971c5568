"""Optional dependencies: imported where used, with an error that names the extra to install."""

import importlib

# Module -> the `pip install "keras-silc[EXTRA]"` extra that brings it.
EXTRAS = {
    "tensorflow_datasets": "tfds",
    "matplotlib": "plots",
}


def require(module):
    """Imports `module`, or raises an ImportError that says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRAS.get(module, "all")
        raise ImportError(
            f'{module} is needed here but not installed: pip install "keras-silc[{extra}]" '
            f"(or pip install {module.replace('_', '-')})."
        ) from error
