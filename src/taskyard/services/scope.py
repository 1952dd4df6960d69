"""Which project a call acts in: the route derives it from the credential and hands it to the service."""

from __future__ import annotations

from dataclasses import dataclass

from taskyard.storage.tables import DEFAULT_PROJECT_ID


@dataclass(frozen=True)
class Scope:
    """`project_id` None: every project (an admin credential without a project, or internal callers).

    Reads filter on `project_id` (None: no filter); creates land in `home`. Objects of another project
    are reported as not found, never as forbidden."""

    project_id: int | None = None

    @property
    def home(self) -> int:
        """The project new tasks, workers and tracked runs belong to."""
        return DEFAULT_PROJECT_ID if self.project_id is None else self.project_id

    @property
    def everything(self) -> bool:
        return self.project_id is None


# Every project; creates land in the default one. What internal callers (and the old API) act in.
UNSCOPED = Scope(None)
DEFAULT_SCOPE = Scope(DEFAULT_PROJECT_ID)
