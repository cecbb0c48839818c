"""Online episodic GRPO (no Ray): from played episodes to an update of the LoRA adapter.

Episodes are played in groups of G from one env seed by the LLM policy in score mode, sampling
from ``softmax(scores / temperature)`` over the valid actions. Each episode's return, normalised
within its group (:func:`policylm.platform.returns.group_advantages`), is the advantage of every
action chosen in it; groups without spread are dropped. The policy being improved is exactly
the sampling distribution, so the learner's log-probability of a chosen action is
``log_softmax(scores / T)[chosen]`` with the scores computed as the engine computes them
(prompt tokens, then the candidate's tokens). ``old`` log-probabilities are the learner's own
before its first update of the iteration (the rollouts were played with the same weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from policylm.platform import trajectories as tr
from policylm.platform.envs import EnvAdapter
from policylm.platform.prompts import action_candidates, render_prompt
from policylm.platform.returns import group_advantages


@dataclass
class StepBatch:
    """The chosen actions of kept episodes: prompt text, chosen action index, advantage."""

    prompts: list[str]
    chosen: list[int]
    advantages: list[float]
    groups: int
    filtered_groups: int


def remaining_targets(rewards: Sequence[float], target: float, adaptive: bool) -> list[float]:
    """The target written in the prompt at each step: ``target - reward earned before it``
    (adaptive), else ``target``; rounded as the policy rounds it."""
    earned = np.concatenate([[0.0], np.cumsum(np.asarray(rewards, np.float64))[:-1]])
    return [round(target - (e if adaptive else 0.0), 2) for e in earned]


def build_batch(steps: pa.Table, adapter: EnvAdapter, form: str, chat: Any, target: float,
                adaptive: bool = True) -> StepBatch:
    """The learner's batch from the steps of one iteration: episodes grouped by env seed,
    advantages from their returns, prompts rendered as the policy rendered them."""
    episodes = tr.episode_table(steps)
    adv, keep = group_advantages(episodes.column("return").to_numpy(),
                                 episodes.column(tr.SEED).to_numpy())
    by_episode = {e: (a, k) for e, a, k in zip(episodes.column(tr.EPISODE_ID).to_pylist(), adv,
                                               keep, strict=True)}
    system = adapter.system_text()
    seeds = episodes.column(tr.SEED).to_numpy()
    spread = {s for s, k in zip(seeds, keep, strict=True) if k}
    rows = steps.select([tr.EPISODE_ID, tr.T, tr.OBS_TEXT, tr.ACTION_INDEX, tr.REWARD]) \
        .sort_by([(tr.EPISODE_ID, "ascending"), (tr.T, "ascending")]).to_pydict()
    out = StepBatch([], [], [], groups=len(set(seeds)), filtered_groups=len(set(seeds)) - len(
        spread))
    start = 0
    ids = rows[tr.EPISODE_ID]
    while start < len(ids):
        end = start
        while end < len(ids) and ids[end] == ids[start]:
            end += 1
        a, k = by_episode[ids[start]]
        if k:
            targets = remaining_targets(rows[tr.REWARD][start:end], target, adaptive)
            for i, tgt in zip(range(start, end), targets, strict=True):
                out.prompts.append(render_prompt(chat, form, system, tgt, rows[tr.T][i],
                                                 rows[tr.OBS_TEXT][i]))
                out.chosen.append(int(rows[tr.ACTION_INDEX][i]))
                out.advantages.append(float(a))
        start = end
    return out


class EpisodicLearner:
    """The policy's LoRA adapter under training (transformers + PEFT, CPU or GPU)."""

    def __init__(self, model: Any, tokenizer: Any, adapter: EnvAdapter, form: str,
                 temperature: float = 1.0, lr: float = 1e-5, epsilon: float = 0.2,
                 beta: float = 0.0, minibatch: int = 64):
        import torch

        from policylm.platform.engines import end_of_turn_id

        self.model, self.tokenizer, self.form = model, tokenizer, form
        self.temperature, self.epsilon, self.beta = temperature, epsilon, beta
        self.minibatch = minibatch
        cands = action_candidates(form, list(adapter.codec.valid_actions or []))
        self.cand_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in cands]
        self.single = all(len(c) == 1 for c in self.cand_ids)
        if not self.single:  # the engine closes multi-token candidates with the end of turn
            end = end_of_turn_id(tokenizer)
            self.cand_ids = [[*c, end] for c in self.cand_ids]
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=lr)

    def chat_prompt(self, system: str, user: str) -> str:
        """The chat template, as the engine renders it (for ``render_prompt``)."""
        from policylm.platform.engines import render_chat

        return render_chat(self.tokenizer, system, user)

    def scores(self, prompts: Sequence[str]) -> Any:
        """Log-likelihood of every candidate after each prompt: tensor [N, K] (with grad)."""
        import torch

        enc = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        k = len(self.cand_ids)
        rows = enc if self.single else [e + c for e in enc for c in self.cand_ids]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        if self.single:
            last = torch.tensor([len(r) - 1 for r in rows], device=device)
            at = logp[torch.arange(len(rows), device=device), last]  # [N, V]
            return at[:, [c[0] for c in self.cand_ids]]
        out = torch.zeros((len(prompts), k), device=device)
        for i in range(len(prompts)):
            for j, c in enumerate(self.cand_ids):
                row, n = i * k + j, len(enc[i])
                pos = torch.arange(n - 1, n - 1 + len(c), device=device)
                out[i, j] = logp[row, pos, torch.tensor(c, device=device)].sum()
        return out

    def action_logps(self, prompts: Sequence[str], chosen: Sequence[int]) -> Any:
        """``log_softmax(scores / T)[chosen]`` per prompt: tensor [N] (with grad)."""
        import torch

        s = self.scores(prompts) / max(self.temperature, 1e-6)
        idx = torch.tensor(list(chosen), device=s.device)
        return torch.log_softmax(s, dim=-1)[torch.arange(len(idx), device=s.device), idx]

    def update(self, batch: StepBatch, epochs: int = 1) -> dict[str, float]:
        """Clipped GRPO steps over the batch (minibatches, ``epochs`` passes); the mean loss,
        clip fraction and KL to the adapter-free model."""
        import torch

        from policylm.platform.policy_gradient import clipped_loss

        n = len(batch.prompts)
        if n == 0:
            return {"loss": 0.0, "clip_fraction": 0.0, "kl": 0.0, "rows": 0}
        spans = [(lo, min(lo + self.minibatch, n)) for lo in range(0, n, self.minibatch)]
        self.model.eval()  # no dropout: the ratio must be exactly 1 before the first step
        with torch.no_grad():
            old = torch.cat([self.action_logps(batch.prompts[lo:hi], batch.chosen[lo:hi])
                             for lo, hi in spans])
            ref = None
            if self.beta:
                with self.model.disable_adapter():
                    ref = torch.cat([self.action_logps(batch.prompts[lo:hi],
                                                       batch.chosen[lo:hi]) for lo, hi in spans])
        adv = torch.tensor(batch.advantages, dtype=torch.float32, device=old.device)
        stats = {"loss": 0.0, "clip_fraction": 0.0, "kl": 0.0}
        count = 0
        for _ in range(epochs):
            for lo, hi in spans:
                new = self.action_logps(batch.prompts[lo:hi], batch.chosen[lo:hi])
                loss, s = clipped_loss(new, old[lo:hi], adv[lo:hi], self.epsilon,
                                       logp_ref=None if ref is None else ref[lo:hi],
                                       beta=self.beta)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                stats["loss"] += float(loss)
                stats["clip_fraction"] += s["clip_fraction"]
                stats["kl"] += s["kl"]
                count += 1
        return {**{k: v / count for k, v in stats.items()}, "rows": n}

    def lora_weights(self) -> tuple[dict[str, Any], float]:
        """The adapter's LoRA tensors (CPU) and their scaling (alpha / r), for the engines."""
        from peft import get_peft_model_state_dict

        state = {k: v.detach().float().cpu() for k, v in
                 get_peft_model_state_dict(self.model).items()}
        cfg = self.model.peft_config["default"]
        return state, float(cfg.lora_alpha) / float(cfg.r)
