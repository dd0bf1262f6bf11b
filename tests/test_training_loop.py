"""The training loop on a tiny random chat model: which tokens count, the losses, learning, exact resume,
atomic state files, clear errors."""

from __future__ import annotations

import os

import pytest
import torch

from agent.learn.hypernet_runs import make_example, tokenize_chat
from hypernet import HypernetConfig, Hypernetwork, apply_lora
from hypernet.batching import IGNORE, DataOrder, SkillBank, collate
from hypernet.train import (TeacherCache, TrainConfig, TrainData, compute_loss, lm_loss, topk_kd_loss, train)
from hypernet.trainstate import TrainingError, load_state, save_state
from tests.tiny import tiny_model_dir

SKILLS = {"commit": "# commit-style\n\nWrite commit subjects like: fix: handle empty input in parser\n",
          "shell": "# shell-style\n\nAlways answer with a bash block: ```bash\nls\n```\n"}
ANSWERS = {"commit": "fix: handle empty input in parser", "shell": "```bash\nls\n```"}
USER = "Run the tests first, read the failing code, edit it."
CONTROL = "# steps\n\n1. Reproduce the failure.\n2. Locate the bug.\n"  # a skill-shaped text that says neither


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model_dir(tmp_path_factory)
    return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()


def small_config() -> HypernetConfig:
    return HypernetConfig(rank=4, alpha=8.0, n_latents=4, latent_dim=32, n_heads=4, trunk_width=64, trunk_blocks=1,
                          embed_dim=16, max_chunk_tokens=64)


def chat(answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": USER}, {"role": "assistant", "content": answer}]


def toy_data(tok, copies: int = 4) -> TrainData:
    """Two skills, one prompt, two different answers: only reading the skill tells them apart."""
    skills = {k: tok(v, add_special_tokens=False)["input_ids"] for k, v in SKILLS.items()}
    ex = {k: make_example(tok, chat(ANSWERS[k]), k, SKILLS[k], 64, teacher=True) for k in SKILLS}
    return TrainData(skills, [ex["commit"], ex["shell"]] * copies, [ex["commit"], ex["shell"]], tok.pad_token_id)


def new_hypernet(base) -> Hypernetwork:
    torch.manual_seed(0)
    return Hypernetwork.for_model(base, small_config(), "tiny")


# --- which tokens count ----------------------------------------------------------------------------
def test_labels_cover_exactly_the_assistant_replies(tiny):
    tok, _ = tiny
    messages = [{"role": "user", "content": "fix the bug"}, {"role": "assistant", "content": ANSWERS["commit"]},
                {"role": "user", "content": "now list files"}, {"role": "assistant", "content": ANSWERS["shell"]}]
    ids, labels = tokenize_chat(tok, messages)
    assert tok.decode(ids) == tok.apply_chat_template(messages, tokenize=False)  # nothing lost or added
    counted = [i for i, label in enumerate(labels) if label != IGNORE]
    assert all(labels[i] == ids[i] for i in counted)
    runs, start = [], counted[0]
    for a, b in zip(counted, counted[1:] + [None]):
        if b != a + 1:
            runs.append((start, a + 1))
            start = b
    # two runs, each exactly one reply plus its end-of-turn token: no header, no user text, no newline
    assert [tok.decode(ids[s:e]) for s, e in runs] == [ANSWERS["commit"] + "<|im_end|>",
                                                        ANSWERS["shell"] + "<|im_end|>"]
    assert tok.decode(ids[:runs[0][0]]).endswith("<|im_start|>assistant\n")  # the header is prompt


def test_lm_loss_reads_only_the_positions_that_predict_assistant_tokens(tiny):
    tok, _ = tiny
    ids, labels = tokenize_chat(tok, chat(ANSWERS["commit"]))
    labels_t = torch.tensor([labels])
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, len(ids), len(tok), generator=g)
    loss = lm_loss(logits, labels_t)
    predicting = [i - 1 for i, label in enumerate(labels) if label != IGNORE]
    others = [i for i in range(len(ids)) if i not in predicting]
    noisy = logits.clone()
    noisy[0, others] += torch.randn(len(others), len(tok), generator=g) * 10
    assert torch.equal(lm_loss(noisy, labels_t), loss)
    noisy[0, predicting[-1]] += torch.randn(len(tok), generator=g)
    assert not torch.equal(lm_loss(noisy, labels_t), loss)


def test_context_distillation_is_zero_when_student_is_teacher(tiny):
    tok, base = tiny
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 50, generator=g)
    t_logp, t_idx = torch.log_softmax(logits, -1).topk(5, dim=-1)
    assert topk_kd_loss(logits, t_logp, t_idx).item() == pytest.approx(0.0, abs=1e-6)
    assert topk_kd_loss(torch.randn(7, 50, generator=g), t_logp, t_idx).item() > 0.01
    # In the pipeline: an untrained hypernet (B = 0) is the base model; with the same sequence on both
    # sides the student is the teacher.
    data = toy_data(tok, copies=1)
    same = [type(e)(e.skill, e.input_ids, e.labels, e.input_ids, e.labels) for e in data.train]
    hn = new_hypernet(base)
    bank = SkillBank(base, hn, data.skills)
    batch = collate(same, range(len(same)), tok.pad_token_id)
    cfg = TrainConfig(kd_weight=1.0)
    _, parts = compute_loss(base, hn, hn.targets, batch, bank, TeacherCache(base, same, 16), cfg)
    assert parts["kd"] == pytest.approx(0.0, abs=1e-5)


def test_teacher_pass_with_the_shared_skill_prefix_cached_matches_a_full_pass(tiny):
    tok, base = tiny
    data = toy_data(tok, copies=1)
    assert all(e.teacher_prefix > 0 for e in data.train)
    first = data.train[0]
    assert tok.decode(first.teacher_ids[:first.teacher_prefix]).endswith(SKILLS["commit"] + "<|im_end|>\n")
    full = [type(e)(e.skill, e.input_ids, e.labels, e.teacher_ids, e.teacher_labels, 0) for e in data.train]
    cached, plain = TeacherCache(base, data.train, 8), TeacherCache(base, full, 8)
    idx = list(range(len(full)))
    (a_logp, a_idx), (b_logp, b_idx) = cached.get(idx, torch.device("cpu")), plain.get(idx, torch.device("cpu"))
    assert torch.equal(a_idx, b_idx) and torch.allclose(a_logp, b_logp, atol=1e-4)
    assert a_logp.shape[0] == sum(e.n_targets for e in data.train)


# --- learning --------------------------------------------------------------------------------------
def answer_logp(tok, base, hn, skill_text: str, answer_of: str) -> float:
    """Log-probability of one skill's answer under the LoRA generated from `skill_text`."""
    lora = hn.lora_from_ids(base, tok(skill_text, add_special_tokens=False)["input_ids"])
    ids, labels = tokenize_chat(tok, chat(ANSWERS[answer_of]))
    with apply_lora(base, lora, mode="merge"), torch.no_grad():
        logits = base(torch.tensor([ids])).logits
    return -lm_loss(logits, torch.tensor([labels])).item() * sum(label != IGNORE for label in labels)


def test_hypernet_learns_to_read_the_skill(tiny):
    tok, base = tiny
    hn = new_hypernet(base)
    result = train(base, hn, toy_data(tok), TrainConfig(steps=40, batch_size=4, lr=3e-3, warmup=2),
                   progress=False)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert result.metrics["val_loss"] < result.metrics["val_loss_base"] - 0.5
    assert result.metrics["skills_encoded"] == 2  # each skill went through the frozen base once
    for own, other in (("commit", "shell"), ("shell", "commit")):
        mine = answer_logp(tok, base, hn, SKILLS[own], own)
        # each answer is likelier under its own skill's LoRA than under the other skill's ...
        assert mine > answer_logp(tok, base, hn, SKILLS[other], own) + 1.0
        # ... and than under a LoRA generated from unrelated text: the hypernet reads its input
        assert mine > answer_logp(tok, base, hn, CONTROL, own) + 0.5


def test_data_order_covers_each_epoch_groups_lengths_and_splits_ranks():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 800, (103,), generator=g).tolist()
    order = DataOrder(lengths, batch_size=4, seed=3)
    epoch = [order.micro_batch(k) for k in range(order.per_epoch)]
    seen = [i for b in epoch for i in b]
    assert set(seen) == set(range(103)) and len(seen) == 26 * 4  # wrap-around fills the last batch
    assert epoch == [DataOrder(lengths, 4, seed=3).micro_batch(k) for k in range(26)]  # pure function of k
    assert [order.micro_batch(k) for k in range(26, 52)] != epoch  # a new shuffle each epoch
    padded = sum(4 * max(lengths[i] for i in b) for b in epoch)
    assert padded < 1.15 * sum(lengths[i] for i in seen)  # similar lengths share a batch
    ranks = [DataOrder(lengths, 2, seed=3, world=2, rank=r) for r in (0, 1)]
    assert all(ranks[0].micro_batch(k) + ranks[1].micro_batch(k) == epoch[k] for k in range(26))


# --- exact resume and the state file ---------------------------------------------------------------
def run(tok, base, tmp_path, name, **kw):
    cfg = TrainConfig(steps=8, batch_size=2, grad_accum=2, lr=3e-3, warmup=2, kd_weight=0.5, save_every=3)
    return train(base, new_hypernet(base), toy_data(tok), cfg, state_path=tmp_path / name, progress=False,
                 identity={"data": "toy"}, **kw)


def test_resume_is_exact(tiny, tmp_path):
    tok, base = tiny
    straight = run(tok, base, tmp_path, "a.state")
    first = run(tok, base, tmp_path, "b.state", stop_at=4)
    assert first.step == 4 and not first.finished and load_state(tmp_path / "b.state").step == 4
    resumed = run(tok, base, tmp_path, "b.state", resume=True)
    assert resumed.step == 8 and resumed.finished
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], abs=1e-6)
    a, b = straight.hypernet.state_dict(), resumed.hypernet.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # and the optimizer moments too
    sa, sb = load_state(tmp_path / "a.state"), load_state(tmp_path / "b.state")
    for i, entry in sa.optimizer["state"].items():
        assert torch.allclose(entry["exp_avg_sq"], sb.optimizer["state"][i]["exp_avg_sq"], atol=1e-9)


def test_resume_refuses_another_run(tiny, tmp_path):
    tok, base = tiny
    run(tok, base, tmp_path, "s.state", stop_at=2)
    state = tmp_path / "s.state"
    cfg = TrainConfig(steps=8, batch_size=2, grad_accum=2, lr=1e-2, warmup=2, kd_weight=0.5)
    with pytest.raises(TrainingError, match="lr 0.003 -> 0.01"):
        train(base, new_hypernet(base), toy_data(tok), cfg, state_path=state, resume=True,
              identity={"data": "toy"}, progress=False)
    with pytest.raises(TrainingError, match="data differs"):
        train(base, new_hypernet(base), toy_data(tok), TrainConfig(steps=8, batch_size=2, grad_accum=2, lr=3e-3,
                                                                   warmup=2, kd_weight=0.5),
              state_path=state, resume=True, identity={"data": "other"}, progress=False)
    state.write_bytes(state.read_bytes()[:500])
    with pytest.raises(TrainingError, match="corrupted|truncated"):
        run(tok, base, tmp_path, "s.state", resume=True)


def test_state_write_is_atomic(tiny, tmp_path, monkeypatch):
    tok, base = tiny
    run(tok, base, tmp_path, "s.state", stop_at=1)
    before = (tmp_path / "s.state").read_bytes()
    state = load_state(tmp_path / "s.state")
    state.step = 99

    def power_cut(fd):
        raise OSError("power cut")

    monkeypatch.setattr("hypernet.trainstate.os.fsync", power_cut)
    with pytest.raises(OSError, match="power cut"):
        save_state(state, tmp_path / "s.state")
    assert (tmp_path / "s.state").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["s.state"]  # no temp file left behind


def test_out_of_memory_is_a_clear_error_and_keeps_the_last_state(tiny, tmp_path, monkeypatch):
    tok, base = tiny
    run(tok, base, tmp_path, "s.state", stop_at=3)
    before = (tmp_path / "s.state").read_bytes()

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("hypernet.train.compute_loss", oom)
    with pytest.raises(TrainingError, match="out of memory at batch size 2.*--batch-size"):
        run(tok, base, tmp_path, "s.state", resume=True)
    assert (tmp_path / "s.state").read_bytes() == before


def test_data_for_another_vocabulary_is_refused(tiny):
    tok, base = tiny
    data = toy_data(tok, copies=1)
    e = data.train[0]
    data.train[0] = type(e)(e.skill, e.input_ids[:-1] + (len(tok) + 5000,), e.labels)
    with pytest.raises(TrainingError, match="another model"):
        train(base, new_hypernet(base), data, TrainConfig(steps=1), progress=False)
