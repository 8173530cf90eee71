"""Nearest-neighbour search over gallery embeddings, the label store beside it, and voting."""
