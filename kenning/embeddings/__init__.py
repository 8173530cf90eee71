"""Embedding model, losses, training and inference."""
