"""The figures a system is scored by, and nothing above them: Kaggle MAP@5 and GAP, Recall@K,
R-precision and mAP@R (`retrieval`), known-vs-unknown AUROC and false-accept rate (`open_set`), and
the figures of a list of answers (`answers`).

A leaf: its modules import the standard library, numpy and scikit-learn only, so training,
thresholds, evaluation and reports all score with the same functions (tests/test_layers.py holds
it to that)."""
