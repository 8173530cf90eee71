"""The decision layer: neighbours and local scores -> ranked labels -> answers (votes, fusion, calibration,
the unknown rule), below the recognizer and above the index."""
