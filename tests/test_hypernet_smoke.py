"""Smoke test on the real embedded model (SmolLM2-135M-Instruct).

Skipped unless HYPERNET_SMOKE_MODEL_DIR names a float32 safetensors copy of it (loading the GGUF takes
~35 s; `python bench/bench_hypernet_latency.py --save-model-dir DIR` writes such a copy).
"""

import os

import pytest
import torch

from hypernet import HypernetConfig, Hypernetwork, apply_lora, convert, find_targets

MODEL_DIR = os.environ.get("HYPERNET_SMOKE_MODEL_DIR")
pytestmark = [pytest.mark.smoke,
              pytest.mark.skipif(not MODEL_DIR, reason="set HYPERNET_SMOKE_MODEL_DIR to a saved SmolLM2-135M")]


def test_embedded_model_targets_conversion_and_injection():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    targets = find_targets(model, ("q_proj", "v_proj"))
    assert len(targets) == 60
    assert (targets[0].in_features, targets[0].out_features, targets[1].out_features) == (576, 576, 192)
    hn = Hypernetwork.for_model(model, HypernetConfig(), "smollm2-135m-instruct").eval()
    lora, timings = convert(hn, model, tok, "# Commit messages\nUse the imperative mood. Keep it short.")
    assert timings.n_chunks == 1 and lora.max_rank == 8
    x = tok("def add(a, b):", return_tensors="pt").input_ids
    with torch.no_grad():
        base = model(x).logits
        with apply_lora(model, lora, mode="merge"):  # untrained: B = 0, the model is unchanged
            assert torch.equal(model(x).logits, base)
