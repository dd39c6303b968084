"""Renamed in this release: the assignment's own API lives in `cnnlab.assignment`."""

raise ImportError(
    "cnnlab.seed is now cnnlab.assignment: from cnnlab.assignment import normalize_images, one_hot",
    name=__name__,
)
