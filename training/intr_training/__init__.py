"""Headless INTR training: image folders in, napari-intr checkpoints out (CLI: `intr`)."""
