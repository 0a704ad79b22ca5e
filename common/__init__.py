"""What every room (training, pipelines, edge, the CLI) shares: the user-error family, atomic writes, the
strict config base, the CPU-feature reader and the image-suffix list. It imports nothing from the rooms and
nothing beyond the base install (numpy, pydantic, the standard library)."""
