"""The plans a server runs: loaded from a folder, reloaded on change, old versions kept for live calls."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from .dialog.engine import DialogEngine
from .dialog.load import LoadedPlan, load_plan
from .errors import PlanError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanVersion:
    """One loaded version of a plan and the engine that runs it."""

    loaded: LoadedPlan
    engine: DialogEngine
    mtime_ns: int


class PlanRegistry:
    """Plans by name from one folder; a reload swaps in new versions only when they load cleanly."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._plans: dict[str, PlanVersion] = {}
        self._files: dict[Path, str] = {}  # file -> plan name it held
        self.errors: dict[Path, str] = {}  # files whose latest version failed to load, and why
        self._failed: dict[Path, tuple[int, str]] = {}  # ... and that version's mtime

    def get(self, name: str) -> PlanVersion | None:
        """The current version of plan `name` (a call keeps the version it started with)."""
        return self._plans.get(name)

    @property
    def names(self) -> list[str]:
        """Names of the plans being served."""
        return sorted(self._plans)

    def _scan(self) -> tuple[list[str], dict[Path, tuple[int, str]]]:
        """Blocking: load new or changed files; returns (what changed, what failed with mtime and why)."""
        changed: list[str] = []
        failed: dict[Path, tuple[int, str]] = {}
        files = sorted(p for p in self.folder.glob("*.y*ml") if p.is_file())
        for path in files:
            mtime = path.stat().st_mtime_ns
            name = self._files.get(path)
            if name is not None and (current := self._plans.get(name)) and current.mtime_ns == mtime:
                continue
            if self._failed.get(path, (None,))[0] == mtime:
                failed[path] = self._failed[path]  # unchanged since it failed: not worth re-reading
                continue
            try:
                loaded = load_plan(path)
            except PlanError as err:
                failed[path] = (mtime, err.message)
                continue
            plan_name = loaded.plan.plan
            owner = next((f for f, n in self._files.items() if n == plan_name and f != path), None)
            if owner is not None and owner in files:
                failed[path] = (mtime, f"plan name '{plan_name}' is already used by {owner}")
                continue
            self._plans[plan_name] = PlanVersion(loaded, DialogEngine(loaded), mtime)
            self._files[path] = plan_name
            changed.append(f"{plan_name} {loaded.version}")
        for path in [p for p in self._files if p not in files]:
            self._plans.pop(self._files.pop(path), None)
            changed.append(f"removed {path.name}")
        return changed, failed

    async def reload(self) -> list[str]:
        """Pick up changed plan files off the event loop; failures keep the previous version serving."""
        changed, failed = await asyncio.to_thread(self._scan)
        for path, (mtime, why) in failed.items():
            if self._failed.get(path) != (mtime, why):
                log.error("plan %s failed to load; any previous version keeps serving:\n%s", path, why)
        self._failed = failed
        self.errors = {path: why for path, (_, why) in failed.items()}
        for line in changed:
            log.info("plan loaded: %s", line)
        return changed

    async def watch(self, *, interval: float = 2.0) -> None:
        """Reload whenever a file changes; runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except OSError as err:
                log.error("cannot scan %s: %s", self.folder, err)
