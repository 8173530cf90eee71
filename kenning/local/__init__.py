"""The second matching stage: local features on the instance (foreground RootSIFT), scored by LNBNN."""
