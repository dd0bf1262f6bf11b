"""The action grammar (agent/runtime/actions.gbnf, decoded by llama.cpp) against the loop's parser.

Checked at the string level with xgrammar, which reads the same GBNF text: every reply the grammar admits
parses, with the action intended; near-misses the grammar admits still parse; replies the parser rejects
are not admitted; and every reply of the policy's training data is admitted (what the model learns is
what it may say).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.runtime.actions import GRAMMAR_PATH, FormatError, parse

xgr = pytest.importorskip("xgrammar")
from xgrammar.testing import _is_grammar_accept_string  # noqa: E402

GRAMMAR = xgr.Grammar.from_ebnf(GRAMMAR_PATH.read_text())


def admitted(text: str) -> bool:
    return _is_grammar_accept_string(GRAMMAR, text)


thought = st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="`"), min_size=1,
                  max_size=120).filter(lambda s: s[0] != " ")
path = st.text(st.sampled_from("abcxyz_./-0123456789"), min_size=1, max_size=30)
num = st.integers(1, 99999).map(str)
code_line = st.one_of(st.just(""), st.text(st.characters(exclude_categories=("Cs",), exclude_characters="`\n\r"),
                                           min_size=1, max_size=60).filter(lambda s: s[0] not in "=<>"))
cmd_line = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="`\n\r"), min_size=1,
                   max_size=80).filter(lambda s: "!" <= s[0] <= "~")


@st.composite
def replies(draw):
    kind = draw(st.sampled_from(["bash", "read", "edit", "range", "test", "submit"]))
    if kind == "bash":
        block = "```bash\n" + "\n".join(draw(st.lists(cmd_line, min_size=1, max_size=6))) + "\n```"
    elif kind == "read":
        window = draw(st.sampled_from(["", ":{a}", ":{a}-{b}"])).format(a=draw(num), b=draw(num))
        block = f"```read\n{draw(path)}{window}\n```"
    elif kind == "edit":
        search = "".join(line + "\n" for line in draw(st.lists(code_line, min_size=1, max_size=5)))
        replace = "".join(line + "\n" for line in draw(st.lists(code_line, max_size=5)))
        block = f"```edit\n{draw(path)}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n```"
    elif kind == "range":
        a = draw(st.integers(1, 500))
        lines = "".join(line + "\n" for line in draw(st.lists(code_line, max_size=5)))
        block = f"```edit\n{draw(path)}:{a}-{a + draw(st.integers(0, 20))}\n{lines}```"
    else:
        block = f"```{kind}\n```"
    return kind, f"{draw(thought)}\n{block}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies())
def test_every_reply_of_the_grammars_shape_is_admitted_and_parses(kind_reply):
    kind, reply = kind_reply
    assert admitted(reply), reply
    action = parse(reply)
    assert action.kind == ("edit" if kind == "range" else kind)
    assert (action.lines is not None) == (kind == "range")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(replies(), st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(
    ["`", "\n", "```", "=======\n", "<<<<<<< SEARCH\n", ">>>>>>> REPLACE\n", "", "x", ":", "-", " "])), max_size=3))
def test_admitted_near_misses_still_parse(kind_reply, edits):
    _, text = kind_reply
    for pos, insert in edits:
        pos %= len(text) + 1
        text = text[:pos] + insert + text[pos + (1 if insert == "" else 0):]
    if admitted(text):
        parse(text)  # FormatError here means the grammar admits a reply the loop cannot use


@pytest.mark.parametrize("bad", [
    "I will fix the bug now.",  # prose
    "Fix it.\n```python\nprint(1)\n```",  # not an action
    "Run.\n```bash\nls\n```\n```test\n```",  # two different blocks
    "Run.\n```bash\n\n```",  # empty command
    "Run.\n```bash\n\x0c\n```",  # a command of whitespace only (form feed strips to nothing)
    "Read.\n```read\n\n```",  # no path
    "Edit.\n```edit\nstats.py\n```",  # neither SEARCH/REPLACE nor a line range
    "Edit.\n```edit\nstats.py:0-3\nx\n```",  # lines start at 1
    "Two ```\n```test\n```",  # a fence inside the thought
])
def test_replies_the_parser_rejects_are_not_admitted(bad):
    with pytest.raises(FormatError):
        parse(bad)
    assert not admitted(bad)


@pytest.mark.parametrize("stricter", ["```test\n```", "Run them\n\n```test\n```"])
def test_the_grammar_is_stricter_than_the_parser(stricter):
    parse(stricter)  # the parser takes these; the grammar wants exactly one thought line first
    assert not admitted(stricter)


def test_policy_training_replies_are_all_admitted():
    import random

    from agent.synth.policy import ROUTES, plan
    from agent.tasks.make import make_tasks

    for task in make_tasks("bug-fixing", 12, 3, pool="train"):
        for route in ROUTES:
            p = plan(task, route, random.Random(0))
            for step in p.steps if p else []:
                assert admitted(step.reply), step.reply
