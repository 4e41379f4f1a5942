"""The Eagle model: vision mixture -> projector -> causal LM."""
