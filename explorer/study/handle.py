"""The one place that reaches a loaded optuna.Study's storage: Optuna keeps the handle private
(`study._storage`, `study._study_id`), and study-level system attrs and trial-by-number writes need it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna


@dataclass(frozen=True)
class StoredStudy:
    storage: optuna.storages.BaseStorage
    study_id: int

    @classmethod
    def of(cls, study: optuna.Study) -> "StoredStudy":
        return cls(study._storage, study._study_id)  # noqa: SLF001 -- the accessor this module exists for

    def system_attrs(self) -> dict[str, Any]:
        return self.storage.get_study_system_attrs(self.study_id)

    def set_system_attr(self, key: str, value: Any) -> None:
        self.storage.set_study_system_attr(self.study_id, key, value)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
