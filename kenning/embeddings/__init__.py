"""The embedding model and what it is made of and run with: backbone + GeM + head, losses and miners
by name, P x K samplers, inference, checkpoints; training itself is `kenning.training`."""
