"""Trained models on disk: versions, the CURRENT pointer, and loading them for serving."""
