"""Gymnasium tasks, scripted experts, wrappers and demonstration datasets (imported on first use)."""

from worldsim.core.lazy_exports import lazy_attributes

_HOMES = {
    "TaskSpec": "tasks",
    "load_task": "tasks",
    "EpisodeJudge": "tasks",
    "Expert": "experts",
    "PushTExpert": "experts",
    "PickPlaceExpert": "experts",
    "collect_dataset": "datasets",
    "load_demonstrations": "datasets",
    "PushTEnv": "push_t",
    "PickPlaceEnv": "pick_place",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_attributes(__name__, _HOMES)
