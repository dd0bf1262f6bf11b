"""Rule-based adherence checkers: did an answer follow a skill's rules? (see `registry` for specs)

Importing the package registers every rule: one module per subtask plus the generic rules.
A seventh subtask adds one module here and one line below.
"""

from agent.checks import bug_fixing, bug_localization, code_review, commit_message, generic, refactoring, test_writing  # noqa: F401  (imported for their @rule registrations)
from agent.checks.answers import Answer, is_imperative
from agent.checks.bug_fixing import fixed_source
from agent.checks.bug_localization import is_test_file
from agent.checks.code_review import COMMENT_SECTIONS
from agent.checks.commit_message import COMMIT_KINDS, GITMOJI, trailer_value
from agent.checks.refactoring import refactored_module
from agent.checks.registry import (
    RULES,
    CheckResult,
    Rule,
    RuleCall,
    Spec,
    SpecError,
    check,
    describe_spec,
    parse_spec,
    rule_questions,
)
from agent.checks.test_writing import camel

__all__ = ["Answer", "CheckResult", "COMMENT_SECTIONS", "COMMIT_KINDS", "GITMOJI", "RULES", "Rule", "RuleCall", "Spec",
           "SpecError", "camel", "check", "describe_spec", "fixed_source", "is_imperative", "is_test_file",
           "parse_spec", "refactored_module", "rule_questions", "trailer_value"]
