"""Synthesis over the whole seed library: every skill yields checked samples, in reasonable time."""

from __future__ import annotations

import time

from agent import synth as sy
def test_full_library_synth_is_fast_and_complete(tmp_path):
    skills = sy.load_library()
    started = time.perf_counter()
    result = sy.synth(None, (1, 2), 2, 0, tmp_path / "train", "train")
    elapsed = time.perf_counter() - started
    print(f"\nfull-library synth (train, stages 1+2, 2 per skill): {elapsed:.1f}s, {result.files}")
    assert elapsed < 180
    train = {s.name for s in skills if s.split == "train"}
    by_skill = result.manifest["counts"]["by_skill"]
    assert set(by_skill) == train
    tasks = [s for s in sy.read_samples(tmp_path / "train" / "train-stage2.jsonl") if s["type"] == "task"]
    per_skill = {name: sum(s["skill"] == name for s in tasks) for name in train}
    assert all(n == 2 for n in per_skill.values()), {k: v for k, v in per_skill.items() if v != 2}
    discards = result.manifest["discards"]["by_reason"]
    failed = sum(v for k, v in discards.items() if k.startswith("check-failed"))
    assert failed <= 0.05 * len(tasks), discards  # references almost always follow their skill
