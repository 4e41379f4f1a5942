"""MLflow: the study's parent run, one child run per trial, the work directory's store."""
