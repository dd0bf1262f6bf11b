"""Training data plumbing: tokenised examples, padded batches, the data order, cached skill states.

Everything here is deterministic so that a resumed run sees exactly the batches it would have seen:
the order of micro-batch k is a pure function of (seed, k), and the frozen encoder states of a skill
are a pure function of its tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import states_cache_key
from .hypernetwork import Hypernetwork

IGNORE = -100  # label of a position that carries no loss (transformers' convention)


@dataclass(frozen=True)
class Example:
    """One tokenised sample. labels[i] = input_ids[i] on assistant tokens, IGNORE elsewhere (unshifted).

    teacher_ids/teacher_labels: the same conversation with the skill in context, for context
    distillation; its labelled tokens are the student's labelled tokens, in the same order. The
    teacher's first `teacher_prefix` tokens are the same for every example of the skill, so the
    teacher pass runs them once per skill (KV cache).
    """

    skill: str  # key into the skill table (the skill text's content hash)
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    teacher_ids: tuple[int, ...] | None = None
    teacher_labels: tuple[int, ...] | None = None
    teacher_prefix: int = 0  # leading teacher tokens (the skill's system block) shared by all its examples

    @property
    def n_targets(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass
class Batch:
    input_ids: Tensor  # (B, T), right-padded
    attention_mask: Tensor  # (B, T)
    labels: Tensor  # (B, T), IGNORE on prompt and padding
    skills: list[str]  # unique skill keys of the batch, in first-seen order
    rows: Tensor  # (B,) index into `skills` of each row's skill
    examples: list[int]  # dataset index of each row (the teacher cache is keyed by it)

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.skills,
                     self.rows.to(device), self.examples)


def pad_rows(rows: Sequence[Sequence[int]], value: int) -> Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def collate(examples: Sequence[Example], indices: Sequence[int], pad_id: int = 0) -> Batch:
    ids = pad_rows([e.input_ids for e in examples], pad_id)
    mask = pad_rows([[1] * len(e.input_ids) for e in examples], 0)
    labels = pad_rows([e.labels for e in examples], IGNORE)
    skills = list(dict.fromkeys(e.skill for e in examples))
    rows = torch.tensor([skills.index(e.skill) for e in examples])
    return Batch(ids, mask, labels, skills, rows, list(indices))


class DataOrder:
    """Which examples micro-batch k holds: a pure function of (seed, k), so a resumed run continues exactly.

    Each epoch is a fresh shuffle, padded by wrap-around to whole global batches (batch_size × world).
    Within windows of `window` global batches the examples are sorted by length before being cut into
    batches, and the batches are then shuffled: rows of a batch have similar lengths, so little compute
    goes to padding, while the order stays random. Rank r takes rows [r·B, (r+1)·B) of each global batch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, world: int = 1, rank: int = 0,
                 window: int = 32):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.world, self.rank, self.window = world, rank, window
        self.group = batch_size * world
        self.per_epoch = -(-len(self.lengths) // self.group)  # global batches per epoch
        self._epoch: tuple[int, list[list[int]]] | None = None

    def _batches(self, epoch: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.lengths), generator=g).tolist()
            order += order[:self.per_epoch * self.group - len(order)]  # wrap around to whole batches
            span = self.window * self.group
            batches = []
            for start in range(0, len(order), span):
                chunk = sorted(order[start:start + span], key=lambda i: self.lengths[i])
                batches += [chunk[j:j + self.group] for j in range(0, len(chunk), self.group)]
            shuffled = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
            self._epoch = (epoch, shuffled)
        return self._epoch[1]

    def micro_batch(self, k: int) -> list[int]:
        epoch, j = divmod(k, self.per_epoch)
        rows = self._batches(epoch)[j]
        return rows[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]


class SkillBank:
    """Frozen encoder states of each skill, computed once per run (the base never changes).

    Keyed by content hash, so two names for the same text share one entry.
    """

    def __init__(self, base: nn.Module, hypernet: Hypernetwork, skills: dict[str, Sequence[int]],
                 cache: dict[str, tuple[Tensor, Tensor]] | None = None):
        self.base, self.hypernet, self.skills = base, hypernet, skills
        # pass the same dict to every stage of a run: the states depend on the frozen base only
        self._cache = cache if cache is not None else {}
        self.encoded = 0  # how many skills went through the base model (tests check "once each")

    def _states(self, key: str) -> tuple[Tensor, Tensor]:
        ids = self.skills[key]
        h = states_cache_key(ids, self.hypernet.base_model_id, self.hypernet.config.encoder_layer,
                             self.hypernet.config.max_chunk_tokens)
        if h not in self._cache:
            states, mask, _ = self.hypernet.encode_batch(self.base, [torch.as_tensor(ids)])
            self._cache[h] = (states.detach(), mask)
            self.encoded += 1
        return self._cache[h]

    def batch(self, keys: Sequence[str]) -> tuple[Tensor, Tensor, list[int]]:
        """(states (N, T, H), mask (N, T), chunks per skill) of the given skills, padded to one width."""
        parts = [self._states(k) for k in keys]
        width = max(s.shape[1] for s, _ in parts)
        states = torch.cat([F.pad(s, (0, 0, 0, width - s.shape[1])) for s, _ in parts])
        mask = torch.cat([F.pad(m, (0, width - m.shape[1])) for _, m in parts])
        return states, mask, [s.shape[0] for s, _ in parts]
