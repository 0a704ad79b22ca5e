"""The pipeline's stages, in order, with the one-line help each CLI shows (imports nothing, so the top-level
`lensops` command lists them without loading the pipeline)."""

STAGES = {
    "evaluate": "score a trained model on a held-out split",
    "optimize": "build runtime variants, gate them on parity, measure latency",
    "package": "build, verify or sign model packages",
    "register": "register a package in the model registry (alias candidate)",
    "promote": "move the production alias when the candidate beats the champion",
}
