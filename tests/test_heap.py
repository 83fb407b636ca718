"""``hub.heap``: a managed process's settled objects are out of the collector's sight, and ``release`` gives
back what was frozen and dropped since (a model replaced by a switch holds reference cycles). Each case runs in
a process of its own: freezing is for the whole process, and this one is the test runner."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import gc, json, weakref
    from hub import heap

    class Model:  # an encoder and its towers refer to each other: a cycle only the collector frees
        def __init__(self):
            self.tower = {{"owner": self, "weights": bytearray(10_000_000)}}

    managed = {managed}
    if managed:
        heap.manage()
    model = Model()
    alive = weakref.ref(model)
    heap.settle("loaded")
    frozen = gc.get_freeze_count()
    del model
    gc.collect()
    kept_by_freeze = alive() is not None
    heap.release("replaced")
    print(json.dumps({{"frozen": frozen, "kept_by_freeze": kept_by_freeze, "freed": alive() is None,
                      "still_frozen": gc.get_freeze_count()}}))
""")


def run(managed: bool) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", SCRIPT.format(managed=managed)], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_managed_process_freezes_what_it_settles_and_release_frees_what_was_dropped():
    found = run(managed=True)
    assert found["frozen"] > 1000  # everything alive at the settle, the model among it
    assert found["kept_by_freeze"]  # a frozen cycle survives a collection…
    assert found["freed"]  # …until release thaws, collects and freezes again
    assert found["still_frozen"] > 1000


def test_a_process_that_did_not_ask_is_left_alone():
    found = run(managed=False)
    assert found["frozen"] == 0 and not found["kept_by_freeze"] and found["freed"] and found["still_frozen"] == 0


TRIM = textwrap.dedent("""
    import json
    from hub import heap

    heap.manage()
    blocks = [bytes(100_000) for _ in range(2000)]  # 200 MB from the C allocator's heap (each under mmap's size)
    pin = bytes(100_000)  # (allocated after them: freeing them leaves a hole the allocator keeps)
    del blocks
    freed = heap._resident_mb()
    heap.settle("loaded")
    print(json.dumps({"freed_but_resident": freed, "settled": heap._resident_mb()}))
""")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's (elsewhere trim does nothing)")
def test_settling_hands_the_memory_freed_before_back_to_the_system():
    """Loading a tower frees as much as it keeps; glibc holds freed pages unless asked (``malloc_trim``)."""
    import json

    out = subprocess.run([sys.executable, "-c", TRIM], capture_output=True, text=True, check=True, timeout=120)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["freed_but_resident"] - found["settled"] > 100  # MB
