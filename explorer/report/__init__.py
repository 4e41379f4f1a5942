"""Reports read from the study database: leaderboard, paper table, plots, the parent run's artifacts."""
