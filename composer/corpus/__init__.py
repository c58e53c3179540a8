"""Genre manifests and their corpora, encoded into token arrays and split by piece."""
