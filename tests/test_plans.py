"""Plan registry: loads a folder, reloads changed files, keeps the old version when a new one is broken."""

from __future__ import annotations

import os
import shutil

from conftest import PLANS

from voicebot.plans import PlanRegistry


def _touch_later(path):
    """Make sure a rewrite is seen as a change even on coarse filesystem clocks."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


async def test_reload_swaps_versions_and_survives_broken_plans(tmp_path):
    """A good edit is picked up; a broken edit keeps the previous version serving and says why."""
    plan_file = tmp_path / "pre_delivery.yaml"
    shutil.copy(PLANS / "pre_delivery.yaml", plan_file)
    registry = PlanRegistry(tmp_path)
    assert await registry.reload() and registry.names == ["pre_delivery"]
    first = registry.get("pre_delivery")

    assert await registry.reload() == []  # nothing changed, nothing reloaded

    plan_file.write_text(plan_file.read_text(encoding="utf-8").replace('version: "1.0"', 'version: "1.1"'),
                         encoding="utf-8")
    _touch_later(plan_file)
    await registry.reload()
    second = registry.get("pre_delivery")
    assert second is not first and second.loaded.plan.version == "1.1"
    assert first.loaded.plan.version == "1.0"  # a call that started on 1.0 keeps its engine

    plan_file.write_text("plan: pre_delivery\nstates: [oops\n", encoding="utf-8")
    _touch_later(plan_file)
    await registry.reload()
    assert registry.get("pre_delivery") is second
    assert "YAML syntax" in registry.errors[plan_file]

    plan_file.unlink()
    await registry.reload()
    assert registry.get("pre_delivery") is None and registry.names == []


async def test_two_files_with_one_plan_name_are_refused(tmp_path):
    """The second file claiming an existing plan name is reported, the first keeps serving."""
    shutil.copy(PLANS / "pre_delivery.yaml", tmp_path / "a.yaml")
    shutil.copy(PLANS / "pre_delivery.yaml", tmp_path / "b.yaml")
    registry = PlanRegistry(tmp_path)
    await registry.reload()
    assert registry.names == ["pre_delivery"]
    assert "already used" in registry.errors[tmp_path / "b.yaml"]
