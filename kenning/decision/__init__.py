"""The decision layer: neighbours and candidate identities -> ranked labels -> answers. The answer
rules (rules.py: k-NN votes, the fused probability) are typed objects owning their threshold and
its calibration; the index stores them, the recognizer answers with one. Below the index; above
only `metrics`."""
