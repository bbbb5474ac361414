"""The run's garbage collector settings apply only while it lasts."""

from __future__ import annotations

import gc

from ferryman.pipeline.interpreter import GEN0_THRESHOLD, tuned_for_pipeline


def test_settings_apply_inside_and_are_restored_after():
    thresholds = gc.get_threshold()
    with tuned_for_pipeline():
        assert gc.get_threshold()[0] == max(thresholds[0], GEN0_THRESHOLD)
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == 0


def test_settings_come_back_after_an_error():
    thresholds = gc.get_threshold()
    try:
        with tuned_for_pipeline():
            raise KeyError("boom")
    except KeyError:
        pass
    assert (gc.get_threshold(), gc.get_freeze_count()) == (thresholds, 0)


def test_an_applications_own_gc_choices_are_kept():
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(0)  # automatic collection off
    try:
        frozen = gc.get_freeze_count()
        with tuned_for_pipeline():
            assert gc.get_threshold()[0] == 0
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_cyclic_garbage_is_still_collected_during_a_run():
    class Node:
        def __init__(self):
            self.me = self

    collected = []

    def note(phase, info):
        if phase == "stop":
            collected.append(info["collected"])

    gc.callbacks.append(note)
    try:
        with tuned_for_pipeline():
            for _ in range(GEN0_THRESHOLD * 2):
                Node()  # each is garbage kept alive only by its own cycle
    finally:
        gc.callbacks.remove(note)
    assert sum(collected) >= GEN0_THRESHOLD  # growth still starts collections
