"""A tiny randomly initialised chat model in a folder: Llama-shaped, GQA, its own small BPE tokenizer.

Lets CLI-level tests (convert, solve, eval) run the real code paths in seconds.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "def clamp(value, low, high): return min(max(value, low), high)",
    "Run the tests first, read the failing code, edit it, run the tests again, then submit.",
    "fix: handle empty input in parser", "```bash\nls\n```", "```test\n```", "```submit\n```",
    "# Steps\n1. Reproduce the failure.\n2. Locate the bug.\n3. Write the fix.",
] * 20


@lru_cache(maxsize=None)
def _build(path: str) -> str:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return str(folder)


def tiny_model_dir(tmp_path_factory) -> str:
    """Build once per session (pass pytest's tmp_path_factory)."""
    return _build(str(tmp_path_factory.getbasetemp() / "tiny-model"))
