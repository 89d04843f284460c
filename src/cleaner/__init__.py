"""Good/bad classifier that filters generated pairs, with a labelling page."""
