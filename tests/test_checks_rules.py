"""Rule-based checkers on hand-written answers."""

from __future__ import annotations

import pytest

from agent import checks as ck
from agent.tasks.task import Task


def passes(response: str, spec: str, task: Task | None = None) -> bool:
    return ck.check(response, spec, task).passed


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize("spec, message", [
    ("", "empty"),
    ("no-such-rule", "unknown rule"),
    ("subject-max-len", "needs a parameter"),
    ("subject-max-len=abc", "not a non-negative integer"),
    ("one-code-block=3", "takes no parameters"),
    ("subject-case=title", "not one of"),
    ("section-max-words=Summary", "expected 'Name:N'"),
    ("Bad_Id", "bad rule id"),
    ("no-magic-numbers=0,one", "list of numbers"),
])
def test_bad_specs_raise_spec_error(spec, message):
    with pytest.raises(ck.SpecError, match=message):
        ck.parse_spec(spec)
    assert issubclass(ck.SpecError, ValueError)


def test_spec_parses_params_and_repeats():
    spec = ck.parse_spec(" sections=Summary, Issues ;bullets=Issues; bullets=Suggestions; subject-max-len=50 ;")
    assert spec.get("sections").value == ["Summary", "Issues"]
    assert [c.value for c in spec.all("bullets")] == ["Issues", "Suggestions"]
    assert spec.get("subject-max-len").value == 50


def test_every_rule_describes_itself_and_most_answer_questions():
    assert len(ck.RULES) >= 60
    samples = {"none": "", "int": "3", "list": "a,b", "num-list": "0,1", "str": "Name", "key-int": "Name:3",
               "key-list": "Name:a,b"}
    asked = 0
    for rule in ck.RULES.values():
        raw = rule.param.split("|")[0].removeprefix("choice:") if rule.param.startswith("choice:") else samples[rule.param]
        value = ck.parse_spec(f"{rule.id}={raw}" if raw else rule.id).calls[0].value
        assert rule.describe(value).endswith("."), rule.id
        asked += bool(rule.questions(value))
    assert asked >= len(ck.RULES) - 5


def test_check_result_score_and_failures():
    result = ck.check("## Summary\n\nok\n", "sections=Summary; max-words=1; no-code-block")
    assert not result.passed and result.checked == 3
    assert result.score == pytest.approx(2 / 3)
    assert result.failures[0].startswith("max-words:")


def test_task_aware_rules_are_skipped_without_a_task():
    result = ck.check("`a.py:3` in `f`", "cites-location; location-correct=0; names-function")
    assert result.passed and result.skipped == ["location-correct", "names-function"] and result.checked == 1


# --------------------------------------------------------------------------- generic


def test_sections_and_labels():
    text = "## Summary\n\nx\n\n## Issues\n\n- a\n\n## Verdict\n\nVerdict: APPROVE\n"
    assert passes(text, "sections=Summary,Issues,Verdict; bullets=Issues")
    assert not passes(text, "sections=Summary,Verdict")
    assert not passes(text.replace("- a", "a"), "bullets=Issues")
    assert passes("## Issues\n\nNone.\n", "bullets=Issues; numbered=Issues")
    labels = "Location: `a.py:3`\nFunction: `f`\nCause: the bound is off by one.\n"
    assert passes(labels, "labels=Location,Function,Cause; section-max-words=Cause:6")
    assert not passes(labels, "section-max-words=Cause:3; labels=Location,Function,Cause")
    assert not passes(labels, "labels=Function,Location,Cause")


def test_numbered_lists_and_counts():
    text = "## Hypotheses\n\n1. one\n2. two\n3. three\n"
    assert passes(text, "numbered=Hypotheses; min-bullets=Hypotheses:3; max-bullets=Hypotheses:3")
    assert not passes(text.replace("2. two", "3. two"), "numbered=Hypotheses")
    assert not passes(text, "max-bullets=Hypotheses:2")


def test_code_block_rules():
    good = "Intro\n\n```python\ndef f():\n    return 1\n```\n"
    assert passes(good, "code-block=python; one-code-block; code-parses")
    assert not passes(good, "code-only")
    assert passes(good.split("\n", 2)[2], "code-only")
    assert not passes("```python\ndef f(:\n```\n", "code-parses")
    assert not passes(good, "no-code-block")
    assert not passes(good, "code-block=diff")


def test_json_and_enum_label():
    assert passes('```json\n{"file": "a.py", "line": 3}\n```', "json-object=file,line")
    assert passes('{"file": "a.py", "line": 3}', "json-object=line,file")
    assert not passes('{"file": "a.py"}', "json-object=file,line")
    assert not passes('Here: {"file": "a.py", "line": 3}', "json-object=file,line")
    assert passes("Location: x\nConfidence: high\n", "enum-label=Confidence:high,medium,low")
    assert not passes("Confidence: certain\n", "enum-label=Confidence:high,medium,low")


# --------------------------------------------------------------------------- commit messages

COMMIT_SPEC = ("conventional-type=feat,fix; scope-required; subject-max-len=50; subject-case=lower; "
               "imperative-subject; subject-no-period; blank-line-after-subject; body=required; body-wrap=72")


def test_conventional_commit_rules():
    good = "fix(intervals): correct the bound in merge\n\nTouching intervals were kept apart.\n"
    assert passes(good, COMMIT_SPEC)
    for bad in (
        "Fix the bound in merge\n\nBody.\n",  # no type
        "fix: correct the bound in merge\n\nBody.\n",  # no scope
        "fix(intervals): corrected the bound in merge\n\nBody.\n",  # not imperative
        "fix(intervals): Correct the bound in merge\n\nBody.\n",  # capitalised
        "fix(intervals): correct the bound in merge.\n\nBody.\n",  # period
        "fix(intervals): correct the bound in merge\nBody.\n",  # no blank line
        "fix(intervals): correct the bound in merge\n",  # no body
        "docs(intervals): correct the bound in merge\n\nBody.\n",  # type not allowed
        "fix(intervals): correct the bound in merge and also much more text\n\nBody.\n",  # too long
        "fix(intervals): correct the bound\n\n" + "word " * 20 + "\n",  # body too wide
    ):
        assert not passes(bad, COMMIT_SPEC), bad


def test_commit_prefix_styles_and_trailers():
    assert passes("[CORE-12] Fix merge\n", "ticket-prefix; subject-case=upper; body=none")
    assert not passes("CORE-12: Fix merge\n", "ticket-prefix")
    assert passes("intervals: fix merge\n", "subsystem-prefix; subject-case=lower")
    assert passes("🐛 Fix merge\n", "gitmoji; subject-case=upper; imperative-subject")
    assert not passes("Fix merge\n", "gitmoji")
    msg = "Fix merge\n\nThe bound was wrong.\n\nSigned-off-by: Ada Park <ada@example.com>\nFixes #12\n"
    assert passes(msg, "trailer=Signed-off-by; closes-issue=Fixes; body=required; body-prose")
    assert not passes(msg, "closes-issue=Closes")
    assert not passes("Fix merge\n\n- a\n- b\n", "body-prose")
    assert passes("Fix merge\n\n- a\n- b\n", "body-bullets")
    assert passes("```\nFix merge\n```", "subject-case=upper; body=none")  # a fenced message is still read


def test_imperative_heuristic():
    for word in ("Add", "fix", "restore", "Use", "document", "address", "process"):
        assert ck.is_imperative(word), word
    for word in ("Added", "fixes", "Fixing", "restored", "Uses"):
        assert not ck.is_imperative(word), word


# --------------------------------------------------------------------------- task-aware


def bug_task() -> Task:
    truth = {"module": "intervals", "file": "intervals.py", "function": "merge", "name": "merge", "line": 21,
             "buggy_line": "        if merged and start < merged[-1][1]:",
             "fixed_line": "        if merged and start <= merged[-1][1]:",
             "failing_tests": ["test_merge_touching_intervals"], "has_bug": True, "kind": "bug", "symbols": ["merge"]}
    return Task("t/1", "bug-localization", "?", {}, truth)


def test_location_rules_with_task():
    task = bug_task()
    spec = "cites-location; location-correct=1; names-function; names-test; quotes-line"
    good = ("`intervals.py:21` in `merge`: `if merged and start < merged[-1][1]:` is too strict; "
            "see `test_merge_touching_intervals` (`test_intervals.py:23`).")
    assert ck.check(good, spec, task).passed
    assert not ck.check(good.replace("intervals.py:21", "intervals.py:30"), spec, task).passed
    # A test file's line is evidence, never the answer.
    assert ck.check("`test_intervals.py:23` then `intervals.py:22` in `merge`", "location-correct=1", task).passed
    assert ck.check('{"file": "intervals.py", "line": 21, "function": "merge"}', "location-correct=0; names-function", task).passed
    assert ck.check("File: `intervals.py`\nLine: 21\n", "location-correct=0", task).passed


def test_review_verdict_and_comments():
    task = bug_task()
    review = ("## Summary\n\nEdits merge.\n\n## Issues\n\n- [high] `intervals.py:21`: `<` drops touching intervals.\n\n"
              "```suggestion\n        if merged and start <= merged[-1][1]:\n```\n\n## Verdict\n\nVerdict: REQUEST CHANGES\n")
    spec = ("sections=Summary,Issues,Verdict; severity-tags=high,low; cite-lines; flags-bug=0; suggestion-block; "
            "verdict=APPROVE,REQUEST CHANGES; verdict-correct")
    assert ck.check(review, spec, task).passed
    approve = review.replace("REQUEST CHANGES\n", "APPROVE\n")
    assert ck.check(approve, spec, task).failures == ["verdict-correct: verdict 'APPROVE', expected 'REQUEST CHANGES'"]
    assert not ck.check(review.replace("[high] ", ""), spec, task).passed
    assert passes("Fine.\n\n- praise: `a.py:1`: neat.\n\nVerdict: LGTM\n", "comment-labels=praise,issue; verdict=LGTM,NO")
    assert passes("x\n- [x] Tests\n- [ ] Docs\nVerdict: OK\n", "checklist=Tests,Docs")


# --------------------------------------------------------------------------- test writing and refactoring


def test_test_writing_rules():
    task = Task("t/2", "test-writing", "?", {}, {"module": "intervals", "function": "merge"})
    code = ('```python\nimport pytest\n\nfrom intervals import merge\n\n\n'
            'def test_merge_empty_list():\n    """merge returns [] for an empty list."""\n'
            '    # Arrange\n    intervals = []\n    # Act\n    result = merge(intervals)\n    # Assert\n'
            '    assert result == [], "empty list"\n```\n')
    spec = ("test-name=test_<unit>_<condition>; step-comments=Arrange,Act,Assert; one-assert; imports-unit; "
            "test-docstrings; assert-messages; covers=empty; min-tests=1; max-test-lines=9")
    assert ck.check(code, spec, task).passed
    assert not ck.check(code.replace("test_merge_empty", "test_split_empty"), "test-name=test_<unit>_<condition>", task).passed
    assert not ck.check(code, "parametrize", task).passed
    assert not ck.check(code, "error-case", task).passed
    assert not ck.check(code, "unittest", task).passed
    assert not ck.check(code, "test-class=Test<Unit>", task).passed


def test_refactoring_rules():
    code = ('```python\nMAX_WIDTH = 80\n\n\ndef wrap_line(text: str, width: int = MAX_WIDTH) -> list[str]:\n'
            '    """Split text into lines."""\n    words = text.split()\n    return [words[0]] if len(words) > 1 else words\n```\n')
    spec = "type-hints; docstrings; snake-case; no-magic-numbers=0,1; min-name-length=3; f-strings; no-bare-except; max-nesting=1"
    assert passes(code, spec)
    assert not passes(code.replace("words[0]", "words[2]"), "no-magic-numbers=0,1")
    assert not passes(code.replace("text: str", "text"), "type-hints")
    assert not passes(code.replace("words", "w"), "min-name-length=3")
    assert not passes(code.replace("words =", "wordList =").replace("words[", "wordList[").replace("(words)", "(wordList)")
                      .replace("else words", "else wordList"), "snake-case")
    assert not passes(code.replace('"""Split text into lines."""', "pass"), "docstrings")
    nested = "```python\ndef f(x):\n    for a in x:\n        if a:\n            while a:\n                a -= 1\n```"
    assert not passes(nested, "max-nesting=2") and passes(nested, "max-nesting=3")


# --------------------------------------------------------------------------- robustness

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FRAGMENTS = ["## Summary", "## Issues", "Verdict: APPROVE", "- [high] a.py:3: x", "1. a.py:2", "```python", "```diff",
             "```", "def test_merge_x():", "    assert merge([]) == []", "--- a/intervals.py", "@@ -1,2 +1,2 @@",
             "fix(x): add y", "Location: `intervals.py:21`", "{\"file\": 1}", "Signed-off-by: A <a@b>", "Fixes #3",
             "class TestMerge:", "    def test_x(self):", "except:", "x = 1 % 2", "", "   ", "None.", "- praise: ok"]
ALL_RULES_SPEC = "; ".join(
    rid if r.param == "none" else f"{rid}=" + {"int": "2", "list": "Summary,Issues", "num-list": "0,1", "str": "Issues",
                                                "key-int": "Issues:3", "key-list": "Risk:low,high"}.get(
        r.param, r.param.removeprefix("choice:").split("|")[0])
    for rid, r in sorted(ck.RULES.items())
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=30)), max_size=12))
def test_no_rule_crashes_on_arbitrary_answers(parts):
    """Model output is arbitrary text: every rule returns a verdict instead of raising."""
    text = "\n".join(parts)
    for task in (None, bug_task()):
        result = ck.check(text, ALL_RULES_SPEC, task, execute=False)
        assert 0.0 <= result.score <= 1.0
        assert not any("could not check" in f for f in result.failures), result.failures
