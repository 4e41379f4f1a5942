"""The Ray Tune backend (`backend: ray`, `--backend ray`; its registry entry is make_ray_executor)."""
from explorer.backends.ray_tune.driver import RayExecutor, make_ray_executor
from explorer.backends.ray_tune.trial import RayTrainRunner, trainer_worker, tune_trial

__all__ = ["RayExecutor", "RayTrainRunner", "make_ray_executor", "trainer_worker", "tune_trial"]
