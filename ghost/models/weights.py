"""Alias of :mod:`ghost.runs.weights` (the documented ``ghost.models.weights.load_weights``): loading trained
weights from local files."""

from ghost.runs.weights import NO_DOWNLOAD, load_state, load_weights, read_state_dict, resolve_weights

__all__ = ["NO_DOWNLOAD", "load_state", "load_weights", "read_state_dict", "resolve_weights"]
