"""The Ray Tune backend (`backend: ray`, `--backend ray`): importing it registers the "ray" executor."""
from explorer.backends.local import register_executor
from explorer.backends.ray_tune.driver import RayExecutor, make_ray_executor
from explorer.backends.ray_tune.trial import RayTrainRunner, trainer_worker, tune_trial

register_executor("ray", make_ray_executor)

__all__ = ["RayExecutor", "RayTrainRunner", "make_ray_executor", "trainer_worker", "tune_trial"]
