"""The training loop and its engines (DDP, DeepSpeed ZeRO), checkpoints, the process group."""
