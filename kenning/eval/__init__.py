"""Metrics, threshold calibration and evaluation runs."""
