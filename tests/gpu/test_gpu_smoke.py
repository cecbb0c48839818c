"""The GPU smoke suite: the hf engine, LoRA SFT steps and the episodic-GRPO learner on CUDA.

Skipped without CUDA (``conftest.py``); ``python tests/gpu/run.py`` runs the same tests without
pytest and prints one JSON line. Tiny models built in code; torch, transformers and PEFT only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import smoke

CANDIDATES = [" " + a for a in smoke.ACTIONS]


def _engines() -> tuple[object, object]:
    from policylm.platform.engines.hf import HFEngine

    return (HFEngine(smoke.model_dir(), dtype="bf16", device=smoke.device()),
            HFEngine(smoke.model_dir(), dtype="fp32", device="cpu"))


def _learner(lr: float) -> object:
    import torch

    from policylm.platform.training.learner import EpisodicLearner

    model, tok = smoke.lora_model(torch.float32)
    actions = SimpleNamespace(codec=SimpleNamespace(valid_actions=smoke.ACTIONS))
    return EpisodicLearner(model, tok, actions, "compact", temperature=1.0, lr=lr, minibatch=8)


def test_engine_scores_in_bf16_on_the_device_match_cpu_fp32():
    """Batched, prefix-cached, session-cached and multi-token (packed) scoring on the device in
    bf16 give the CPU fp32 scores within bf16's precision (2 % of the log-probability plus
    0.05; measured on CPU bf16: at most 0.08 on scores of -12 to -24), and the model sits on
    the device."""
    gpu, cpu = _engines()
    assert smoke.wrong_devices(gpu.model, smoke.device().split(":")[0]) == []
    prompts = smoke.compact_prompts(6)
    cands = [CANDIDATES] * len(prompts)
    want = np.stack(cpu.score(prompts, cands))
    assert np.isfinite(want).all() and want.std() > 0.01  # the candidates score differently
    got = {
        "batched": gpu.score(prompts, cands),
        "prefix": gpu.score(prompts, cands, prefix="R="),
    }
    # candidates of one token each: their scores are read at the prompt's last position
    got["single-token"] = gpu.score(prompts, [CANDIDATES[:2]] * 6)
    want_single = cpu.score(prompts, [CANDIDATES[:2]] * 6)
    # sessions: the second prompt of each episode extends its first, so the cache is reused
    first = [p + " right\n" for p in prompts[:3]]
    gpu.score(first, cands[:3], sessions=["a", "b", "c"])
    got["session"] = gpu.score([f + q for f, q in zip(first, prompts[3:], strict=True)],
                               cands[:3], sessions=["a", "b", "c"])
    want_session = cpu.score([f + q for f, q in zip(first, prompts[3:], strict=True)], cands[:3])
    assert gpu.reused_tokens > 0
    for name, scores in got.items():
        ref = {"session": want_session, "single-token": want_single}.get(name, want)
        ref = np.stack(ref)
        excess = np.abs(np.stack(scores) - ref) - (0.02 * np.abs(ref) + 0.05)  # bf16's precision
        assert excess.max() <= 0, f"{name} on {smoke.device()}: {excess.max():.3f} past bf16's"


def test_lora_sft_steps_lower_the_loss_on_the_device():
    """Completion-only LoRA SFT steps in bf16 on the device: the loss on the rows falls by half
    within 30 steps, and every parameter, buffer and optimiser state stays on the device."""
    import torch

    from policylm.platform.prompts import training_pair

    model, tok = smoke.lora_model(torch.bfloat16)
    pairs = [training_pair("compact", "", float(25 * i), i, f"cart at {0.1 * i:.1f}",
                           smoke.ACTIONS[i % 3]) for i in range(8)]
    rows = [(tok(p, add_special_tokens=False)["input_ids"],
             tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
            for p, c in pairs]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p): len(p) + len(c)] = torch.tensor(c)  # the loss reads the answer only
        mask[i, : len(p) + len(c)] = 1
    dev = smoke.device()
    ids, labels, mask = ids.to(dev), labels.to(dev), mask.to(dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(30):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    kind = dev.split(":")[0]
    assert smoke.wrong_devices(model, kind) == []
    states = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim()]
    assert states and all(t.device.type == kind for t in states)


def test_grpo_learner_update_moves_the_policy_toward_positive_advantages():
    """Episodic-GRPO updates on the device: the learner's clipped objective on the batch falls,
    the advantaged action's probability rises, the other's falls, its log-probabilities are on
    the device, and the engine given the learner's LoRA weights scores as the learner does."""
    import torch

    from policylm.platform.training.learner import StepBatch

    learner = _learner(lr=5e-3)
    prompts = smoke.compact_prompts(8)
    chosen = [i % 2 for i in range(8)]  # left, right, left, ...
    adv = [1.0 if c == 0 else -1.0 for c in chosen]  # left was good, right was bad
    batch = StepBatch(prompts, chosen, adv, groups=1, filtered_groups=0)

    def objective() -> float:
        with torch.no_grad():
            logp = learner.action_logps(prompts, chosen)
        assert logp.device.type == smoke.device().split(":")[0]
        return -float((torch.tensor(adv, device=logp.device) * logp).mean())

    def p_left() -> float:
        with torch.no_grad():
            return float(torch.softmax(learner.scores(prompts), -1)[:, 0].mean())

    before, left_before = objective(), p_left()
    for _ in range(4):
        stats = learner.update(batch, epochs=2)
        assert stats["rows"] == 8 and np.isfinite(stats["loss"])
    assert objective() < before - 0.1
    assert p_left() > left_before + 0.05

    from policylm.platform.engines.hf import HFEngine

    engine = HFEngine(smoke.model_dir(), dtype="fp32", device=smoke.device())
    weights, scaling = learner.lora_weights()
    assert engine.set_lora(weights, scaling) > 0
    with torch.no_grad():
        want = torch.log_softmax(learner.scores(prompts), -1).cpu().numpy()
    got = np.stack(engine.score(prompts, [CANDIDATES] * 8))
    got = got - np.log(np.exp(got).sum(-1, keepdims=True))
    assert np.abs(got - want).max() < 1e-3
