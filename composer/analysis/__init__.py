"""Measures of music computed from notes: what a piece sounds like, its key and form, and how sets of pieces compare."""
