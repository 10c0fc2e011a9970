"""train.cpu_allocator=retain: large tensors freed in one step are reused warm in the next, and the
process gets glibc's behaviour back when training ends."""

from __future__ import annotations

import resource

import pytest
import torch

from spellfix.training.allocator import _glibc, cpu_heap

needs_glibc = pytest.mark.skipif(_glibc() is None, reason="the setting is glibc malloc's (mallopt)")

MIB = 256 * 1024  # float32 elements per MiB


def _step_faults() -> int:
    """Minor page faults of one step-like pattern: large tensors of several sizes (all above glibc's
    largest dynamic mmap threshold, 32 MiB) allocated, written, and freed a little later."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    live: list[torch.Tensor] = []
    for mib in (64, 40, 96, 64, 48):
        live.append(torch.empty(mib * MIB).fill_(1.0))
        if len(live) > 2:
            live.pop(0)
    del live
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


BIG_MIB = 768  # larger than any block this suite frees, so no free heap left behind can hold it


def _big_tensor_faults() -> int:
    """Minor page faults of writing a BIG_MIB tensor right after an equal one was freed: every page
    under glibc's own settings (mmap on allocation, munmap on free)."""
    torch.empty(BIG_MIB * MIB).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(BIG_MIB * MIB).fill_(2.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _glibc_settings_in_force() -> bool:
    return _big_tensor_faults() > BIG_MIB * 1024 * 1024 // resource.getpagesize() * 3 // 4


@needs_glibc
def test_retained_heap_reuses_freed_pages_where_system_malloc_faults_them_in_every_step():
    written_pages = (64 + 40 + 96 + 64 + 48) * 1024 * 1024 // resource.getpagesize()
    assert _glibc_settings_in_force()  # munmap on free, fresh mmap + page faults next time
    with cpu_heap("retain", "cpu") as applied:
        assert applied
        retained = [_step_faults() for _ in range(12)]  # the heap grows for the first steps ...
    # ... then pages are reused warm: over the last 6 steps fewer faults than half of one step's pages
    # (glibc's defaults: every page of every step), most steps none (the heap may still grow once
    # when the process's earlier allocations left it fragmented)
    assert sum(retained[-6:]) < written_pages // 2, retained
    assert sorted(retained[-6:])[3] < written_pages // 100, retained
    # glibc's settings are back (free heap the run left behind may still serve blocks that fit in it)
    assert _glibc_settings_in_force()


@needs_glibc
def test_the_setting_only_applies_to_cpu_training_with_retain():
    with cpu_heap("system", "cpu") as applied:
        assert not applied
    with cpu_heap("retain", "cuda") as applied:
        assert not applied


@needs_glibc
def test_a_cpu_training_run_trains_under_the_retained_heap_and_hands_glibc_back(tiny_recipe_dict, tmp_path, monkeypatch):
    """The notebook path: spellfix.train on CPU applies the setting for the run (the real cpu_heap,
    observed, not replaced) and the process allocates as before once it returns."""
    import contextlib

    from spellfix.config import load_recipe
    from spellfix.training import loop

    seen: list[bool] = []

    @contextlib.contextmanager
    def observed(mode, device_type):
        with cpu_heap(mode, device_type) as applied:
            seen.append(applied)
            yield applied

    monkeypatch.setattr(loop, "cpu_heap", observed)
    result = loop.train(load_recipe(tiny_recipe_dict), tmp_path / "run", resume="never", progress=False)
    assert result.steps == tiny_recipe_dict["train"]["max_steps"]
    assert seen == [True]  # the recipe default, train.cpu_allocator=retain, on CPU
    assert _glibc_settings_in_force()
