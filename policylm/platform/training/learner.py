"""The episodic GRPO learner (transformers + PEFT, CPU or GPU): the LoRA adapter under
training, the log-probability of a played action as the engine scores it, and the clipped
update (see :mod:`policylm.platform.training.episodic_grpo` for the objective).

Light imports (numpy; torch and PEFT inside the methods; no env, data or Ray packages), so the
GPU smoke suite (``tests/gpu``) runs it on a machine with only torch, transformers and PEFT.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from policylm.platform.prompts import ChatTemplate, action_candidates

if TYPE_CHECKING:
    from policylm.platform.envs import EnvAdapter


@dataclass
class StepBatch:
    """The chosen actions of kept episodes: prompt text, chosen action index, advantage."""

    prompts: list[str]
    chosen: list[int]
    advantages: list[float]
    groups: int
    filtered_groups: int
    completions: list[str] = field(default_factory=list)  # generated actions (continuous)
    versions: list[int] = field(default_factory=list)  # weights that played each (empty: current)


class EpisodicLearner:
    """The policy's LoRA adapter under training (transformers + PEFT, CPU or GPU).

    ``version`` counts the updates made (the weights of version v are those before update v);
    the weights of the last ``max_staleness`` versions are kept for steps they played.
    ``micro_tokens``: a minibatch's forward and backward passes run over pieces of at most this
    many tokens (one row at least), their gradients summed before the one optimizer step, so an
    update's activation memory follows the piece, not the minibatch (the update is the same)."""

    def __init__(self, model: Any, tokenizer: Any, adapter: EnvAdapter, form: str,
                 temperature: float = 1.0, lr: float = 1e-5, epsilon: float = 0.2,
                 beta: float = 0.0, minibatch: int = 64, max_staleness: int = 0,
                 max_weight: float = 2.0, micro_tokens: int = 512):
        import torch

        from policylm.platform.engines.contract import end_of_turn_id, scored_tokens

        self.model, self.tokenizer, self.form = model, tokenizer, form
        self.temperature, self.epsilon, self.beta = temperature, epsilon, beta
        self.minibatch, self.micro_tokens = minibatch, micro_tokens
        self.max_staleness, self.max_weight = max_staleness, max_weight
        self.version = 0
        self.snapshots: dict[int, dict[str, Any]] = {}  # version -> its LoRA tensors
        self.end = end_of_turn_id(tokenizer)
        self.template = ChatTemplate(tokenizer)  # renders prompts as the engines do
        self.generated = adapter.codec.valid_actions is None
        cands = action_candidates(form, list(adapter.codec.valid_actions or []))
        # the tokens each candidate's log-probability sums over, by the engines' rule
        self.cand_ids = scored_tokens([[tokenizer(c, add_special_tokens=False)["input_ids"]
                                        for c in cands]], self.end)[0]
        self.single = all(len(c) == 1 for c in self.cand_ids)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=lr)
        # the KL term's reference: the starting policy (a starting SFT adapter's weights, not the
        # adapter-free model)
        self.reference = self._lora_state() if beta else None

    def _token_logps(self, rows: Sequence[Sequence[int]],
                     reads: Sequence[tuple[int, int, int]], temperature: float = 1.0,
                     layout: tuple[Any, Any] | None = None) -> Any:
        """``log_softmax(logits / temperature)`` of right-padded token ``rows``, read only where
        asked: for each ``(row, position, token)`` the log-probability that ``token`` follows
        ``position``, tensor [len(reads)] (with grad). The output layer runs at those positions
        alone, so memory and time do not grow with prompt length x vocabulary. ``layout``:
        ``(allowed, positions)`` of packed rows
        (:func:`~policylm.platform.engines.contract.packed_layout`, as the engine scores them),
        else plain causal attention."""
        import torch

        from policylm.platform.engines.contract import attention_bias

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(list(r))
            mask[i, : len(r)] = 1
        device = next(self.model.parameters()).device
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        extra: dict[str, Any] = {"attention_mask": mask.to(device)}
        if layout is not None:
            allowed, positions = layout
            dtype = next(self.model.parameters()).dtype
            extra = {"attention_mask": attention_bias(allowed, dtype).to(device),
                     "position_ids": positions.to(device)}
        hidden = base.get_decoder()(input_ids=ids.to(device), **extra).last_hidden_state
        at = torch.tensor([[r, c] for r, c, _ in reads], device=device)
        logits = base.get_output_embeddings()(hidden[at[:, 0], at[:, 1]]).float() / temperature
        tokens = torch.tensor([t for _, _, t in reads], device=device)
        return torch.log_softmax(logits, dim=-1)[torch.arange(len(reads), device=device), tokens]

    def completion_logps(self, prompts: Sequence[str], completions: Sequence[str]) -> Any:
        """Log-probability of generating each completion (then the end of turn) after its
        prompt, token by token at the sampling temperature: tensor [N] (with grad)."""
        import torch

        enc = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        comp = [[*self.tokenizer(c, add_special_tokens=False)["input_ids"], self.end]
                for c in completions]
        reads, owner = [], []
        for i, (e, c) in enumerate(zip(enc, comp, strict=True)):
            reads += [(i, len(e) - 1 + j, tok) for j, tok in enumerate(c)]
            owner += [i] * len(c)
        logp = self._token_logps([e + c for e, c in zip(enc, comp, strict=True)], reads,
                                 max(self.temperature, 1e-6))
        out = torch.zeros(len(prompts), device=logp.device, dtype=logp.dtype)
        return out.index_add(0, torch.tensor(owner, device=logp.device), logp)

    def scores(self, prompts: Sequence[str]) -> Any:
        """Log-likelihood of every candidate after each prompt: tensor [N, K] (with grad)."""
        import torch

        from policylm.platform.engines.contract import packed_layout, packed_rows

        enc = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        k = len(self.cand_ids)
        if self.single:  # one row per prompt; every candidate is read at its last position
            reads = [(i, len(e) - 1, c[0]) for i, e in enumerate(enc) for c in self.cand_ids]
            return self._token_logps(enc, reads).view(len(prompts), k)
        # one row per prompt: the prompt, then every candidate but its last token as a branch
        # that sees the prompt and itself only (the engine's packed layout)
        rows, packed = packed_rows(enc, [self.cand_ids] * len(enc), 0)
        reads, owner = [], []
        for i, row in enumerate(packed):
            for j, positions, tokens in row:
                reads += [(i, p, t) for p, t in zip(positions, tokens, strict=True)]
                owner += [i * k + j] * len(tokens)
        logp = self._token_logps(rows, reads, layout=packed_layout(rows, packed, 0))
        out = torch.zeros(len(prompts) * k, device=logp.device, dtype=logp.dtype)
        return out.index_add(0, torch.tensor(owner, device=logp.device), logp).view(-1, k)

    def action_logps(self, prompts: Sequence[str], chosen: Sequence[int],
                     completions: Sequence[str] = ()) -> Any:
        """``log_softmax(scores / T)[chosen]`` per prompt, or for generated actions the
        completions' log-probabilities: tensor [N] (with grad)."""
        import torch

        if self.generated:
            return self.completion_logps(prompts, completions)
        s = self.scores(prompts) / max(self.temperature, 1e-6)
        idx = torch.tensor(list(chosen), device=s.device)
        return torch.log_softmax(s, dim=-1)[torch.arange(len(idx), device=s.device), idx]

    def update(self, batch: StepBatch, epochs: int = 1) -> dict[str, float | None]:
        """Clipped GRPO steps over the batch (minibatches, ``epochs`` passes), the learner's
        version one more afterwards; the mean loss, clip fraction, KL to the starting policy (the
        LoRA weights the learner was made with; None: not computed, as ``beta`` is 0), the
        steps' mean version lag (``staleness``), the mean importance weight and the share
        truncated at ``max_weight``. An empty batch trains nothing and says so: every figure
        None, ``rows`` 0."""
        n = len(batch.prompts)
        lags = self._lags(batch)
        if self.max_staleness:  # kept for the steps these weights will play
            self.snapshots[self.version] = self._lora_state()
        try:
            if n == 0:  # nothing to learn from (every group without spread): nothing trained
                return {"loss": None, "clip_fraction": None, "kl": None, "rows": 0,
                        "staleness": None, "importance_weight": None, "weight_truncated": None}
            return {**self._train(batch, epochs), "staleness": float(np.mean(lags)) if lags
                    else 0.0}
        finally:
            self.version += 1
            for v in [v for v in self.snapshots if v < self.version - self.max_staleness]:
                del self.snapshots[v]

    def _lags(self, batch: StepBatch) -> list[int]:
        """How many versions behind the learner each step's weights are; refuses steps from
        weights it does not hold (older than the cap, or newer than itself)."""
        lags = [self.version - v for v in batch.versions]
        bad = sorted({v for v, lag in zip(batch.versions, lags, strict=True)
                      if lag < 0 or lag > self.max_staleness})
        if bad:
            raise ValueError(f"steps played with weights version(s) {bad}: the learner is at "
                             f"version {self.version} with max_staleness {self.max_staleness}, "
                             "so it trains only on versions "
                             f"{max(0, self.version - self.max_staleness)}..{self.version}; "
                             "drop older episodes before the update (grpo_episodes does)")
        return lags

    def _train(self, batch: StepBatch, epochs: int) -> dict:
        import torch

        from policylm.platform.training.policy_gradient import clipped_loss

        n = len(batch.prompts)
        spans = self._spans(n)
        cost = self._row_tokens(batch)
        self.model.eval()  # no dropout: the ratio must be exactly 1 before the first step
        with torch.no_grad():
            old = self._all_logps(batch, cost)
            weight = self.importance_weights(batch, old)
            ref = None
            if self.reference is not None:
                with self._lora_restored():
                    self._load_lora(self.reference)
                    ref = self._all_logps(batch, cost)
        adv = torch.tensor(batch.advantages, dtype=torch.float32, device=old.device)
        stats = {"loss": 0.0, "clip_fraction": 0.0, "kl": 0.0 if self.beta else None}
        count = 0
        for _ in range(epochs):
            for lo, hi in spans:
                self.optimizer.zero_grad()
                # the minibatch's mean loss as the row-weighted sum of its pieces' mean losses
                for a, b in self._pieces(cost, lo, hi):
                    new = self._batch_logps(batch, a, b)
                    loss, s = clipped_loss(new, old[a:b], adv[a:b], self.epsilon,
                                           logp_ref=None if ref is None else ref[a:b],
                                           beta=self.beta,
                                           weight=None if weight is None else weight[a:b])
                    share = (b - a) / (hi - lo)
                    (loss * share).backward()
                    stats["loss"] += float(loss.detach()) * share
                    stats["clip_fraction"] += s["clip_fraction"] * share
                    if stats["kl"] is not None:
                        stats["kl"] += s["kl"] * share
                self.optimizer.step()
                count += 1
        truncated = None if weight is None else weight >= self.max_weight
        return {**{k: None if v is None else v / count for k, v in stats.items()}, "rows": n,
                "importance_weight": 1.0 if weight is None else float(weight.mean()),
                "weight_truncated": 0.0 if truncated is None else float(truncated.float().mean())}

    def importance_weights(self, batch: StepBatch, proximal: Any) -> Any:
        """``min(exp(proximal - behaviour), max_weight)`` per step, the behaviour
        log-probability computed under the weights that played the step; None when every step
        was played with the current weights (every weight 1). Raises KeyError for a version
        the learner no longer holds."""
        import torch

        stale = sorted({v for v in batch.versions if v != self.version})
        if not stale:
            return None
        behaviour = proximal.clone()
        with self._lora_restored(self.snapshots.get(self.version)):  # update's copy
            for v in stale:
                self._load_lora(self.snapshots[v])
                idx = [i for i, x in enumerate(batch.versions) if x == v]
                part = StepBatch([batch.prompts[i] for i in idx], [batch.chosen[i] for i in idx],
                                 [], 0, 0, [batch.completions[i] for i in idx]
                                 if batch.completions else [])
                behaviour[idx] = self._all_logps(part)
        return torch.clamp(torch.exp(proximal - behaviour), max=self.max_weight)

    def _lora_state(self, *to: Any) -> dict[str, Any]:
        """A copy of the LoRA tensors (never the parameters themselves), moved or cast by
        ``to`` (``Tensor.to``'s device and dtype) when given."""
        from peft import get_peft_model_state_dict

        return {k: v.detach().to(*to, copy=True)
                for k, v in get_peft_model_state_dict(self.model).items()}

    @contextmanager
    def _lora_restored(self, current: dict[str, Any] | None = None) -> Iterator[None]:
        """Puts the LoRA tensors back as they were on exit, whatever was loaded inside
        (``current``: a copy of them already taken; else one is taken here)."""
        current = self._lora_state() if current is None else current
        try:
            yield
        finally:
            self._load_lora(current)

    def _load_lora(self, state: dict[str, Any]) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.model, state)
        unused = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
        if unused:  # loading is not strict: a key that did not round-trip would be skipped
            raise RuntimeError(f"LoRA snapshot keys not loaded into the model: {unused[:3]}")

    def _spans(self, n: int) -> list[tuple[int, int]]:
        return [(lo, min(lo + self.minibatch, n)) for lo in range(0, n, self.minibatch)]

    def _row_tokens(self, batch: StepBatch) -> list[int]:
        """The tokens one forward pass holds for each row: its prompt (and the candidates'
        branches when they are several tokens long), or its prompt and completion."""
        branch = 0 if self.single or self.generated else sum(len(c) - 1 for c in self.cand_ids)
        texts = [p + c for p, c in zip(batch.prompts, batch.completions, strict=True)] \
            if self.generated else batch.prompts
        return [branch + len(self.tokenizer(t, add_special_tokens=False)["input_ids"])
                for t in texts]

    def _pieces(self, cost: Sequence[int], lo: int, hi: int) -> list[tuple[int, int]]:
        """Rows ``lo..hi`` cut into runs of at most ``micro_tokens`` tokens (a row each at
        least)."""
        out, start, used = [], lo, 0
        for i in range(lo, hi):
            if i > start and used + cost[i] > self.micro_tokens:
                out.append((start, i))
                start, used = i, 0
            used += cost[i]
        return [*out, (start, hi)]

    def _all_logps(self, batch: StepBatch, cost: Sequence[int] | None = None) -> Any:
        """Every row's log-probability (no optimizer step), in pieces; ``cost``: the rows'
        :meth:`_row_tokens`, when the caller has them."""
        import torch

        cost = self._row_tokens(batch) if cost is None else cost
        return torch.cat([self._batch_logps(batch, a, b)
                          for lo, hi in self._spans(len(batch.prompts))
                          for a, b in self._pieces(cost, lo, hi)])

    def _batch_logps(self, batch: StepBatch, lo: int, hi: int) -> Any:
        return self.action_logps(batch.prompts[lo:hi], batch.chosen[lo:hi],
                                 batch.completions[lo:hi])

    def lora_weights(self) -> tuple[dict[str, Any], float]:
        """A copy of the adapter's LoRA tensors (CPU, fp32) and their scaling (alpha / r), for
        the engines."""
        import torch

        # a copy: the rollouts may read it after later updates
        state = self._lora_state("cpu", torch.float32)
        cfg = self.model.peft_config["default"]
        return state, float(cfg.lora_alpha) / float(cfg.r)
