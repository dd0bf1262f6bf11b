"""Policy data and the policy adapter: verified trajectories through the agent's own interface, and a LoRA
that learns them (tiny random model)."""

from __future__ import annotations

import json
import random
import re

import pytest

from agent.runtime import loop
from agent.runtime.actions import parse
from agent.synth import policy as P
from agent.tasks.make import make_tasks
from sandbox_fixtures import needs_bwrap
from tiny import tiny_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@needs_bwrap
def test_every_route_is_executed_and_verified_in_the_sandbox():
    task = make_tasks("bug-fixing", 3, 7, pool="train")[0]
    seen_returns = []
    for route in P.ROUTES:
        p = P.plan(task, route, random.Random(1))
        if p is None:  # wrong-first needs another change of the faulty line, wrong-line-first another line
            continue
        out = P.execute(task, p)
        assert out.reason is None, (route, out.reason)
        msgs = out.messages
        assert msgs[0] == {"role": "system", "content": loop.SYSTEM}
        assert msgs[1]["content"].startswith("Task: ") and "FAILED" in msgs[1]["content"]
        assert "  defined: " in msgs[1]["content"]  # where the failing line's callee is, as `agent solve` says
        kinds = [parse(m["content"]).kind for m in msgs if m["role"] == "assistant"]
        assert kinds[-1] == "submit" and kinds[-2] == "test" and "edit" in kinds
        assert "exit code 0" in msgs[-2]["content"]  # the last observation: the tests pass
        if route in ("wrong-first", "wrong-line-first"):  # the refuted guess is seen failing before the fix
            tests = [m["content"] for m in msgs if m["role"] == "user"][2:]
            assert any(t.startswith("exit code 1") for t in tests)
        # where the failing function returned from: in the report, in the read's thought, inside its window
        returned = re.search(rf"  {task.truth['name']} returned .* at {task.truth['file']}:(\d+)$", msgs[1]["content"], re.M)
        if returned:
            read = next(m["content"] for m in msgs if m["role"] == "assistant" and "```read" in m["content"])
            assert f"returned at line {returned.group(1)}." in read
            assert int(parse(read).arg.rsplit("-", 1)[1]) > int(returned.group(1))
            seen_returns.append(route)
    assert seen_returns  # this task's failing call returns a wrong value: every route sees where from


@needs_bwrap
def test_a_plan_that_does_not_fix_the_bug_is_discarded():
    task = make_tasks("bug-fixing", 3, 7, pool="train")[0]
    p = P.plan(task, "read-first", random.Random(1))
    broken = P.PolicyPlan(p.task_text, p.route, [s for s in p.steps if "edit" not in s.block])
    assert P.execute(task, broken).reason == "end-not-passing"


def test_held_out_modules_never_reach_policy_training_data():
    from agent.tasks import mutations as mu

    train = {t.truth["module"] for t in make_tasks("bug-fixing", 200, 0, pool="train")}
    assert train and not train & set(mu.EVAL_MODULES)


def test_policy_lora_learns_the_trajectories(cli, tmp_path_factory, tmp_path):
    tiny = tiny_model_dir(tmp_path_factory)
    reply = "Run the tests first.\n```test\n```"
    rows = [{"skill": "", "subtask": "bug-fixing", "stage": 3, "type": "policy", "task_id": f"t{i}",
             "messages": [{"role": "system", "content": loop.SYSTEM},
                          {"role": "user", "content": f"Task: fix bug {i}"},
                          {"role": "assistant", "content": reply}]} for i in range(24)]
    data = tmp_path / "train-policy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "policy"
    r = cli("policy", "train", "--data", str(data), "--out", str(out), "--model", tiny, "--steps", "30",
            "--batch-size", "4", "--lr", "1e-2", "--rank", "4", "--max-tokens", "512", "--no-progress", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["final_loss"] < report["first_loss"] - 0.5
    assert report["val_loss"] < report["val_loss_base"]  # held-out tasks of the same shape
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert {m.rsplit(".", 1)[-1] for m in cfg["target_modules"]} >= {"q_proj", "down_proj"} and cfg["r"] == 4
    again = cli("policy", "train", "--data", str(data), "--out", str(out), "--model", tiny, "--steps", "1")
    assert again.code == 2 and "already exists" in again.err
    missing = cli("policy", "train", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "x"),
                  "--model", tiny)
    assert missing.code == 2 and "no such file" in missing.err and not (tmp_path / "x").exists()
    # --init continues from the adapter: the first step's loss is the trained one, not the base model's
    warm = cli("policy", "train", "--data", str(data), "--out", str(tmp_path / "warm"), "--model", tiny, "--steps",
               "1", "--batch-size", "4", "--lr", "1e-9", "--rank", "4", "--max-tokens", "512", "--init", str(out),
               "--no-progress", "--json")
    assert warm.code == 0, warm.err
    warmed = json.loads(warm.out)
    assert warmed["first_loss"] < report["first_loss"] - 0.5 and warmed["init"]["folder"] == str(out)
    wrong = cli("policy", "train", "--data", str(data), "--out", str(tmp_path / "w8"), "--model", tiny, "--steps",
                "1", "--rank", "8", "--init", str(out))
    assert wrong.code == 2 and "rank 4" in wrong.err and not (tmp_path / "w8").exists()


@needs_bwrap
def test_wrong_line_first_edits_another_line_sees_it_fail_puts_it_back_then_fixes():
    tasks = make_tasks("bug-fixing", 12, 3, pool="train")
    plans = [(t, P.plan(t, "wrong-line-first", random.Random(2))) for t in tasks]
    task, p = next((t, p) for t, p in plans if p is not None)
    edits = [parse(s.block) for s in p.steps if s.block.startswith("```edit")]
    (wrong, _), (undo, _), (fix, _) = [(e.lines, e) for e in edits]
    assert wrong == undo != fix == (task.truth["line"], task.truth["line"])
    out = P.execute(task, p)
    assert out.reason is None, out.reason
    observations = [m["content"] for m in out.messages if m["role"] == "user"]
    assert observations[3].startswith("exit code 1") and observations[-1].startswith("exit code 0")


def test_focus_returned_weights_the_trajectories_that_copy_the_returned_line(tmp_path):
    def row(read_thought: str, window: str, fix: str) -> dict:
        return {"messages": [{"role": "user", "content": "task"},
                             {"role": "assistant", "content": f"{read_thought}\n```read\nm.py:{window}\n```"},
                             {"role": "user", "content": "lines"},
                             {"role": "assistant", "content": f"{fix}\n```edit\nm.py:1-1\nx\n```"}]}
    same = row("`f` returned at line 7. Read `f`.", "1-12", "Line 7 is `return a`. Fix line 7.")
    other = row("`f` returned at line 7. Read `f`.", "1-12", "Line 5 is `a = b`. Fix line 5.")
    unseen = row("`f` returned at line 30. Read `f`.", "1-12", "Line 30 is `return a`. Fix line 30.")
    plain = row("Read `f`.", "1-12", "Line 5 is `a = b`. Fix line 5.")
    assert [P.returned_class(r) for r in (same, other, unseen, plain)] == ["same", "other", "none", "none"]
    src = tmp_path / "train-policy.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [same] * 10 + [other] * 10 + [plain] * 10))
    counts = P.focus_returned(src, tmp_path / "focus.jsonl", 8, seed=1)
    assert counts == {"same": 5, "other": 2, "none": 1, "from": 30}
    kept = [json.loads(line) for line in (tmp_path / "focus.jsonl").read_text().splitlines()]
    assert sorted(P.returned_class(r) for r in kept) == ["none"] + ["other"] * 2 + ["same"] * 5
