"""Where trials run: local processes, Ray Tune trials, SLURM jobs (one registry, backends.registry)."""
