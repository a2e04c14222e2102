"""Images to batches: the P x K sampler, augmentation, decoding and loaders."""
