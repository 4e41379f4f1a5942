"""A trial's cost before it runs: FLOPs, memory, parameter counts at full size."""
