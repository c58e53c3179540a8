"""Training, evaluation, the n-gram baseline and training studies."""
