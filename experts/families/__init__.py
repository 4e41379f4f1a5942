"""One module per vision-expert family (transformers and timm architectures)."""
