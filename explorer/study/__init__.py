"""The study: its file, the trial specs it generates, its database and the statistics over stored trials."""
