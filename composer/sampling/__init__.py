"""New pieces from a model: the sampler, one stream or many in a batch."""
