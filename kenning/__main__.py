"""`python -m kenning ...`: the CLI, also the module torchrun starts (`torchrun ... -m kenning train-embed`)."""

from kenning.cli import main

main()
