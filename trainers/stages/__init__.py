"""One trial process: the recipe's stages (pre-alignment, SFT, evaluation) and their runner."""
