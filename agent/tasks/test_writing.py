"""Test-writing tasks: a corpus function and the call examples of its `cases.json`."""

from __future__ import annotations

import sys
import types
from functools import lru_cache
from typing import Any

from agent.tasks import mutations as mu, pysource
from agent.tasks.task import Task, literal, task_id


@lru_cache(maxsize=None)
def _module_namespace(name: str) -> dict[str, Any]:
    """Import a corpus module in-process (our own code) to compute expected values."""
    mod = mu.corpus_module(name)
    module = types.ModuleType(f"_corpus_{name}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(mod.source, mod.file, "exec"), module.__dict__)
    namespace = dict(module.__dict__)
    for line in mod.imports:
        exec(line, namespace)
    return namespace


def _cases(mod: mu.CorpusModule, func: str) -> list[dict[str, str]]:
    namespace = _module_namespace(mod.name)
    out = []
    for call, condition in mod.cases.get(func, ()):
        case = {"call": call, "condition": condition}
        try:
            value = eval(call, dict(namespace))
        except Exception as exc:  # the case documents an error
            case["raises"] = type(exc).__name__
            case["message"] = str(exc)
        else:
            text = literal(value)
            if text is None or eval(text, dict(namespace)) != value:
                continue
            case["expect"] = text
        out.append(case)
    return out


def test_writing_tasks(pool: str) -> list[Task]:
    tasks = []
    for mod in mu.load_corpus(pool):
        for fn in pysource.functions_of(mod.source, mod.name):
            if fn.qualname not in mod.cases:
                continue
            cases = _cases(mod, fn.qualname)
            if len(cases) < 2:
                continue
            imports = [f"from {mod.name} import {fn.qualname}", *mod.imports]
            prompt = (f"Write pytest tests for `{fn.qualname}` in `{mod.file}` "
                      f"(import it with `from {mod.name} import {fn.qualname}`).\n\n```python\n{fn.source}```")
            truth = {"module": mod.name, "file": mod.file, "function": fn.qualname, "cases": cases,
                     "imports": imports, "error_types": sorted({c["raises"] for c in cases if "raises" in c})}
            kind = "raises" if truth["error_types"] else "values"
            tasks.append(Task(task_id("test-writing", mod.name, fn.qualname), "test-writing", prompt,
                              {"file": mod.file, "code": fn.source}, truth, kind))
    return tasks
