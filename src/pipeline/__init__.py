"""Chain runner: ``python -m src.pipeline +experiment=NAME`` runs an experiment's stages."""
