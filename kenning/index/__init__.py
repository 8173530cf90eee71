"""Nearest-neighbour search over gallery embeddings and the label store beside it."""
