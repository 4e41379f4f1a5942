"""Eagle Explorer's sweeper: study files, strategies (greedy, grid, tpe), Optuna storage, the
controller and its executors, MLflow tracking, and the `eagle-explore` command line.

Submodules are imported where needed (the CLI must start fast): `explorer.study.load.load_study`,
`explorer.controller.run_study` / `run_worker`, `explorer.study.storage.open_study`."""
