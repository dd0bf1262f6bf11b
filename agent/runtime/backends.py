"""The local transformers chat for the agent loop (an OpenAI-compatible endpoint is agent.runtime.endpoint)."""

from __future__ import annotations

import torch


def _stop_after_block(tokenizer, prompt_len: int):
    from transformers import StoppingCriteria

    class StopAfterBlock(StoppingCriteria):
        """Stop decoding once the reply holds a complete fenced block: the loop reads only the first action."""

        def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
            text = tokenizer.decode(input_ids[0, prompt_len:], skip_special_tokens=True)
            return torch.full((input_ids.shape[0],), text.count("```") >= 2, dtype=torch.bool,
                              device=input_ids.device)

    return StopAfterBlock()


def prompt_ids(tokenizer, messages: list[dict[str, str]], budget: int) -> torch.Tensor:
    """(1, T) chat-template ids with the generation prompt, cut to `budget` tokens."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    if ids.shape[1] > budget:
        # keep the system prompt's effect by keeping the start and the most recent turns
        ids = torch.cat([ids[:, : budget // 4], ids[:, -(budget - budget // 4):]], dim=1)
    return ids


class LocalChat:
    """Decoding with the local model (greedy at temperature 0, else seeded sampling); whatever adapter is
    applied to it is in effect."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 256, context: int | None = None,
                 stop_after_block: bool = True, temperature: float = 0.0, seed: int = 0) -> None:
        self.model = model
        self.temperature = temperature
        self.generator_seed = seed
        self.stop_after_block = stop_after_block
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.context = context or getattr(model.config, "max_position_embeddings", 2048)

    @torch.no_grad()
    def chat(self, messages: list[dict[str, str]]) -> tuple[str, int]:
        ids = prompt_ids(self.tokenizer, messages, self.context - self.max_new_tokens)
        from transformers import StoppingCriteriaList

        ids = ids.to(self.model.device)
        stop = StoppingCriteriaList([_stop_after_block(self.tokenizer, ids.shape[1])] if self.stop_after_block else [])
        sampling = {"do_sample": False}
        if self.temperature > 0:
            torch.manual_seed(self.generator_seed)
            self.generator_seed += 1  # another draw next turn, the same sequence for the same seed
            sampling = {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), stopping_criteria=stop,
                                  max_new_tokens=self.max_new_tokens, **sampling,
                                  pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        new = out[0, ids.shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True), int(ids.shape[1] + new.shape[0])
