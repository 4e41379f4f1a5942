"""The Ray Tune backend (`backend: ray`, `--backend ray`): importing it registers the "ray" executor."""
from explorer.executor import register_executor
from explorer.ray_backend.executor import RayExecutor, make_ray_executor
from explorer.ray_backend.trial import RayTrainRunner, trainer_worker, tune_trial

register_executor("ray", make_ray_executor)

__all__ = ["RayExecutor", "RayTrainRunner", "make_ray_executor", "trainer_worker", "tune_trial"]
