"""Caches shared by a study's trials: stage-1 weights, stage-2 features, file claims."""
