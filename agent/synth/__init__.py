"""Training data for the hypernetwork, by stage (see `build`), with one reference renderer per subtask."""

from agent.synth.build import SynthResult, synth
from agent.synth.common import (
                                DEFAULT_LIBRARY,
                                MAX_ASSISTANT_TOKENS,
                                SampleFormatError,
                                SynthError,
                                SynthSkill,
                                approx_tokens,
                                load_library,
                                read_samples,
)
from agent.synth.eval_items import make_eval_items
from agent.synth.samples import task_candidates

__all__ = ["DEFAULT_LIBRARY", "MAX_ASSISTANT_TOKENS", "SampleFormatError", "SynthError", "SynthResult", "SynthSkill",
           "approx_tokens", "load_library", "make_eval_items", "read_samples", "synth", "task_candidates"]
