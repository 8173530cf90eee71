"""Training the embedding on labelled identities: P x K batches, any loss mix, validation, checkpoints, resume.

run.py (the entry: split, build, save), fit.py (the epoch loop and its checkpoints), batches.py
(images or cached features), validation.py (leave-one-out figures of held-out identities),
curves.py (the PNG of each epoch). Above `embeddings` (model, losses, samplers) and `index` (the
validation searches with it).

Two modes share one loop. `finetune` trains backbone, head and loss on augmented images.
`frozen` caches the backbone's pooled features once (feature_cache) and trains only the head and
the loss on them: minutes on a CPU instead of hours, and the same model directory at the end.
`auto` (the default) fine-tunes on CUDA and freezes on a CPU.

Under torchrun the same loop runs in every process (distributed.py): DDP averages the gradients
of the model and the loss's class centres, each rank draws its own classes per step, pairwise
losses see the gathered global batch, the frozen-mode cache is computed in shards by rank, and
rank 0 alone validates and writes.
"""
