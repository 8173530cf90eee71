"""Evaluation runs (an index on a split, a model under a protocol), Kaggle files and reports; the
figures themselves are `kenning.metrics`."""
