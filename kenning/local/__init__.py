"""The second matching stage: local features on the instance, from a family chosen by name
(registry.py, extractor.py; SIFT in sift.py), stored with their descriptor layout (featureset.py)
and scored by the family's matcher (LNBNN), with spatial verification (RANSAC)."""
