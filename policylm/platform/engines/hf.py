"""The transformers engine (CPU or GPU): batched candidate scoring with a shared-prefix KV cache,
and batched generation.

Scoring runs one forward pass per batch: the prefix (the system turn, given as a hint) is
encoded once and its key/value cache reused for every row and call; each row is a prompt's
remaining tokens. When a candidate is longer than one token, every candidate's tokens follow
the prompt in the same row ("packed"), with an attention mask that lets each candidate see the
prompt and its own earlier tokens only, at positions that continue the prompt: the prompt is
encoded once for all its candidates instead of once per candidate. Rows are right-padded, so
padding never reaches a position that is read, and only the positions that are read go through
the output head.

Sessions (``score(..., sessions=keys)``, what a policy with history passes: one key per
episode): each prompt's KV cache is kept under its key, and the key's next prompt computes only
its tokens after their longest common prefix, so a prompt that extends the one before costs its
new tokens, not the whole transcript. Rows with a session are computed one at a time (their
caches differ in length). The sessions' tensors are kept within ``max_session_bytes`` (least
recently used dropped first), and :meth:`HFEngine.drop_session` frees an ended episode's.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from policylm.platform.engines.contract import (
    EngineError,
    Generation,
    attention_bias,
    dtype_name,
    end_of_turn_id,
    finished,
    packed_layout,
    packed_rows,
    row_seeds,
    scored_tokens,
)
from policylm.platform.engines.sampling import row_sampler
from policylm.platform.prompts import ChatTemplate

log = logging.getLogger("policylm")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (avx512_bf16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto``: bf16 on GPUs and on CPUs with native bf16, else fp32; or ``bf16``/``fp32``."""
    import torch

    name = dtype_name(dtype)
    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda") or cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def merge_adapter(lm: Any, adapter: str, model_name: str) -> Any:
    """``lm`` with the PEFT LoRA adapter in ``adapter`` merged into its weights."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(lm, adapter).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise EngineError(
            f"LoRA adapter {adapter!r} does not load on base model {model_name!r} ({err}); "
            "use the base model the adapter was trained on"
        ) from err


def cache_bytes(cache: Any) -> int:
    """Bytes a KV cache holds: the storage of its key and value tensors (a cropped cache still
    holds its tensors' whole storage)."""
    seen, total = set(), 0
    for layer in getattr(cache, "layers", ()):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is None or not hasattr(tensor, "untyped_storage"):
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def crop(cache: Any, n: int) -> None:
    """Keep the first ``n`` positions of a KV cache (``Cache.crop`` takes how many to drop)."""
    drop = cache.get_seq_length() - n
    if drop > 0:
        cache.crop(-drop)


class HFEngine:
    """transformers causal LM (+ optional PEFT LoRA adapter, merged for speed)."""

    name = "hf"

    def __init__(self, model: str, adapter: str | None = None, dtype: str = "auto",
                 device: str | None = None, max_batch_tokens: int = 8192,
                 max_session_bytes: int = 512 * 2**20):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from policylm.platform.engines.models import resolve_model

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = pick_dtype(dtype, self.device)
        self.model_name, self.adapter = model, adapter
        path = resolve_model(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            # eager attention on CPU, sdpa on GPUs (the results page gives the measurement)
            lm = AutoModelForCausalLM.from_pretrained(
                path, dtype=self.dtype,
                attn_implementation="sdpa" if self.device.startswith("cuda") else "eager")
        except (OSError, ValueError) as err:
            raise EngineError(
                f"model {model!r} could not be loaded ({err}); give a local directory with "
                "config.json, weights and tokenizer, or hf://smollm2-135m for the embedded model"
            ) from err
        if adapter:
            lm = merge_adapter(lm, adapter, model)
        self.model = lm.to(self.device).eval()
        self.max_length = int(getattr(lm.config, "max_position_embeddings", 2048))
        self.max_batch_tokens = max_batch_tokens
        self.end_id = end_of_turn_id(self.tokenizer)
        self.template = ChatTemplate(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.end_id
        self._prefixes: dict[tuple[int, ...], Any] = {}
        # session key -> (the token ids of its last prompt, their KV cache, the bytes the
        # cache holds), least recently used first
        self._sessions: dict[Hashable, tuple[list[int], Any, int]] = {}
        self.max_session_bytes = max_session_bytes
        self.reused_tokens = 0  # prompt tokens read from session caches instead of computed
        self.truncated = 0
        # work done by scoring forwards, for FLOP/s accounting: real (unpadded) query tokens
        # and query x key pairs summed over rows, and the padded tokens computed besides
        self.forward_tokens = 0
        self.attention_pairs = 0
        self.padded_tokens = 0

    # --- weights -------------------------------------------------------------------------

    def set_lora(self, weights: dict[str, Any], scaling: float) -> int:
        """Apply LoRA weights (a PEFT state dict: ``...<module>.lora_A.weight`` and
        ``...lora_B.weight``) on top of the weights this engine loaded: ``W = W0 + scaling *
        B @ A`` for each adapted linear layer (``W0`` kept from the first call, so successive
        calls replace the delta instead of adding to it). Clears the prefix and session caches,
        which were computed with the old weights. Returns the number of layers changed."""
        import torch

        modules = dict(self.model.named_modules())
        pairs: dict[str, dict[str, Any]] = {}
        for key, value in weights.items():
            for part in ("lora_A", "lora_B"):
                marker = f".{part}."
                if marker in key:
                    name = key.split(marker)[0].removeprefix("base_model.model.")
                    pairs.setdefault(name, {})[part] = value
        if not hasattr(self, "_base_weights"):
            self._base_weights: dict[str, Any] = {}
        changed = 0
        with torch.no_grad():
            for name, ab in pairs.items():
                layer = modules.get(name)
                if layer is None or "lora_A" not in ab or "lora_B" not in ab:
                    raise EngineError(f"LoRA weights name layer {name!r}, which model "
                                      f"{self.model_name!r} does not have")
                base = self._base_weights.setdefault(name, layer.weight.detach().clone())
                a = torch.as_tensor(ab["lora_A"], dtype=torch.float32)
                b = torch.as_tensor(ab["lora_B"], dtype=torch.float32)
                delta = (b @ a) * scaling
                layer.weight.copy_((base.float() + delta.to(base.device)).to(base.dtype))
                changed += 1
        self._prefixes.clear()
        self._sessions.clear()
        return changed

    # --- prompts -------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # --- scoring -------------------------------------------------------------------------

    def _prefix_cache(self, prefix: str | None, ids: list[list[int]]) -> tuple[int, Any]:
        """``(n, cache)``: the KV cache of the prefix's ``n`` tokens, computed once per prefix;
        ``(0, None)`` without a prefix or when a prompt does not start with it."""
        import torch

        if not prefix:
            return 0, None
        pre = tuple(self.encode(prefix))
        if not pre or any(len(r) <= len(pre) or tuple(r[: len(pre)]) != pre for r in ids):
            return 0, None
        if pre not in self._prefixes:
            if len(self._prefixes) >= 8:
                self._prefixes.pop(next(iter(self._prefixes)))
            with torch.no_grad():
                out = self.model(torch.tensor([pre], device=self.device), use_cache=True)
            self._prefixes[pre] = out.past_key_values
        return len(pre), self._prefixes[pre]

    def _fit(self, ids: list[int], reserve: int, keep_tail: int = 8) -> list[int]:
        """Make ``ids`` + ``reserve`` tokens fit the context: keep the start (system turn,
        target, step, the observation's beginning) and the last ``keep_tail`` tokens (the end of
        the user turn and the assistant header); drop the observation's end between them."""
        room = self.max_length - reserve
        if len(ids) <= room:
            return ids
        self.truncated += 1
        if self.truncated in (1, 100, 10000):
            warnings.warn(f"prompt of {len(ids)} tokens exceeds the model context "
                          f"({self.max_length}); dropping the end of the observation "
                          f"({self.truncated} prompts so far)", stacklevel=3)
        return ids[: room - keep_tail] + ids[len(ids) - keep_tail:]

    def _hidden(self, rows: list[list[int]], n_pre: int, cache: Any,
                packed: tuple[Any, Any] | None = None, extend: bool = False) -> Any:
        """Last hidden states of right-padded ``rows`` after the prefix cache; ``packed`` is
        ``(allowed, positions)`` from :func:`~policylm.platform.engines.contract.packed_layout`
        (else plain causal attention).
        ``extend``: one row, whose keys and values are appended to ``cache`` itself (a session's;
        else the cache is copied per row and left as it was)."""
        import torch

        width = max(len(r) for r in rows)
        batch = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            batch[i, : len(r)] = torch.tensor(r)
        real = sum(len(r) for r in rows)
        self.forward_tokens += real
        self.padded_tokens += len(rows) * width - real
        kwargs: dict[str, Any] = {"input_ids": batch.to(self.device),
                                  "use_cache": cache is not None}
        if packed is None:
            self.attention_pairs += sum(len(r) * (n_pre + (len(r) + 1) / 2) for r in rows)
        else:
            allowed, positions = packed
            # pairs of real tokens only (a padding position attends to itself)
            self.attention_pairs += int(allowed.sum()) - (len(rows) * width - real)
            kwargs["attention_mask"] = attention_bias(allowed, self.dtype).to(self.device)
            kwargs["position_ids"] = positions.to(self.device)
        if cache is not None and not extend:
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(len(rows))
        if cache is not None:
            kwargs["past_key_values"] = cache  # no mask: right padding is never read
        decoder = self.model.get_decoder()
        return decoder(**kwargs).last_hidden_state

    def _logprobs_at(self, hidden: Any, picks: list[tuple[int, int]]) -> Any:
        """log-softmax over the vocabulary at (row, position) picks: tensor [len(picks), V]."""
        import torch

        rows = torch.tensor([p[0] for p in picks], device=hidden.device)
        cols = torch.tensor([p[1] for p in picks], device=hidden.device)
        logits = self.model.get_output_embeddings()(hidden[rows, cols]).float()
        return torch.log_softmax(logits, dim=-1)

    def score(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
              prefix: str | None = None, sessions: Sequence[Hashable] | None = None
              ) -> list[np.ndarray]:
        """See the engine contract. ``sessions``: a key per prompt (an episode's); each prompt's
        KV cache is kept under its key, and the next prompt of the key computes only the tokens
        after their longest common prefix (the caches kept hold at most ``max_session_bytes``;
        the least recently used are dropped first)."""
        import torch

        if len(prompts) != len(candidates):
            raise ValueError("score needs one candidate list per prompt")
        if sessions is not None and len(sessions) != len(prompts):
            raise ValueError("score needs one session key per prompt")
        cand = scored_tokens([[self.encode(c) for c in cs] for cs in candidates], self.end_id)
        single = all(len(c) == 1 for cs in cand for c in cs)
        longest = max((len(c) for cs in cand for c in cs), default=1)
        ids = [self._fit(self.encode(p), longest) for p in prompts]
        with torch.inference_mode():
            if sessions is not None:
                return [self._score_session(r, cs, single, key)
                        for r, cs, key in zip(ids, cand, sessions, strict=True)]
            n_pre, cache = self._prefix_cache(prefix, ids)  # none if truncation cut into it
            out: list[np.ndarray] = []
            if single:  # one row per prompt; every candidate's logp is at its last position
                for lo, hi in self._batches([len(r) - n_pre for r in ids]):
                    rows = [r[n_pre:] for r in ids[lo:hi]]
                    hidden = self._hidden(rows, n_pre, cache)
                    lp = self._logprobs_at(hidden, [(i, len(r) - 1) for i, r in enumerate(rows)])
                    for i, cs in enumerate(cand[lo:hi]):
                        out.append(lp[i, [c[0] for c in cs]].cpu().numpy().astype(np.float64))
                return out
            sizes = [len(r) - n_pre + sum(len(c) - 1 for c in cs) for r, cs in zip(ids, cand,
                                                                                 strict=True)]
            for lo, hi in self._batches(sizes):
                rows, reads = packed_rows(ids[lo:hi], cand[lo:hi], n_pre)
                hidden = self._hidden(rows, n_pre, cache, packed_layout(rows, reads, n_pre))
                out += self._read_scores(hidden, reads)
            return out

    def _score_session(self, ids: list[int], cand: list[list[int]], single: bool,
                       key: Hashable) -> np.ndarray:
        """One prompt's candidate scores, computing only its tokens after the longest common
        prefix with the session's last prompt; the session then holds this prompt's cache."""
        from transformers import DynamicCache

        old_ids, cache, _ = self._sessions.pop(key, ([], None, 0)) if key is not None \
            else ([], None, 0)
        n = 0
        while n < min(len(old_ids), len(ids) - 1) and old_ids[n] == ids[n]:
            n += 1  # at least the prompt's last token is computed: its hidden state is read
        if cache is None or n == 0:
            cache, n = DynamicCache(), 0
        else:
            crop(cache, n)
        self.reused_tokens += n
        if single:
            hidden = self._hidden([ids[n:]], n, cache, extend=True)
            lp = self._logprobs_at(hidden, [(0, len(ids) - n - 1)])
            out = lp[0, [c[0] for c in cand]].cpu().numpy().astype(np.float64)
        else:
            rows, reads = packed_rows([ids], [cand], n)
            hidden = self._hidden(rows, n, cache, packed_layout(rows, reads, n), extend=True)
            (out,) = self._read_scores(hidden, reads)
            crop(cache, len(ids))  # the prompt's keys and values, not the candidates'
        if key is not None:  # None: a prompt of no session
            self._keep_session(key, ids, cache)
        return out

    def _keep_session(self, key: Hashable, ids: list[int], cache: Any) -> None:
        """Keep ``cache`` as the most recent session, dropping the least recently used ones
        until all of them fit ``max_session_bytes`` (one larger than that is not kept)."""
        size = cache_bytes(cache)
        if size > self.max_session_bytes:
            return
        self._sessions[key] = (ids, cache, size)
        while self.session_bytes() > self.max_session_bytes:
            self._sessions.pop(next(iter(self._sessions)))

    def session_bytes(self) -> int:
        """Bytes the session caches hold (their tensors' storage)."""
        return sum(size for _, _, size in self._sessions.values())

    def drop_session(self, key: Hashable) -> None:
        """Free a session's cache (its episode ended); an unknown key is ignored."""
        self._sessions.pop(key, None)

    def _read_scores(self, hidden: Any, reads: list[list[tuple[int, list[int], list[int]]]]
                     ) -> list[np.ndarray]:
        """Each packed row's candidate scores: the log-likelihoods of the tokens ``reads`` names
        (:func:`~policylm.platform.engines.contract.packed_rows`), summed per candidate."""
        import torch

        picks = sorted({(k, p) for k, row in enumerate(reads) for _, ps, _ in row for p in ps})
        lp = self._logprobs_at(hidden, picks)
        at = {pick: n for n, pick in enumerate(picks)}
        where, toks, owner = [], [], []  # every scored token at once, then summed
        for k, row in enumerate(reads):
            for j, ps, ts in row:
                where += [at[(k, p)] for p in ps]
                toks += ts
                owner += [(k, j)] * len(ts)
        got = lp[torch.tensor(where, device=lp.device),
                 torch.tensor(toks, device=lp.device)].cpu().numpy().astype(np.float64)
        scores = [np.zeros(len(row)) for row in reads]
        for (k, j), v in zip(owner, got, strict=True):
            scores[k][j] += v
        return scores

    def _batches(self, lengths: list[int]) -> list[tuple[int, int]]:
        """Split rows into consecutive batches of at most ``max_batch_tokens`` padded tokens."""
        out, lo, width = [], 0, 0
        for i, n in enumerate(lengths):
            w = max(width, n)
            if i > lo and w * (i - lo + 1) > self.max_batch_tokens:
                out.append((lo, i))
                lo, w = i, n
            width = w
        out.append((lo, len(lengths)))
        return out

    # --- generation ----------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], *args: Any, **kwargs: Any) -> list[str]:
        """The texts of :meth:`generate_details` (the same parameters)."""
        return [g.text for g in self.generate_details(prompts, *args, **kwargs)]

    def generate_details(self, prompts: Sequence[str], max_new_tokens: int = 16,
                         temperature: float = 0.0, seed: int | None = None,
                         seeds: Sequence[int | None] | None = None) -> list[Generation]:
        """Each prompt continued (see the engine contract): greedy at ``temperature`` 0, else
        sampled row by row, each row from its own generator (Gumbel-max over the tempered,
        top-k/top-p filtered logits: the distribution ``do_sample`` draws from), so a row's
        text does not depend on the other rows of the batch or on torch's global RNG."""
        import torch

        ids = [self._fit(self.encode(p), max_new_tokens) for p in prompts]
        width = max(len(r) for r in ids)
        batch = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, r in enumerate(ids):  # left padding, so every row ends where it continues
            batch[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        sampling = {}
        if temperature > 0:
            sampling["logits_processor"] = row_sampler(
                self.model.generation_config, self.device, temperature,
                row_seeds(len(ids), seed, seeds))
        with torch.no_grad():
            out = self.model.generate(
                input_ids=batch.to(self.device), attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens, pad_token_id=self.pad_id,
                eos_token_id=self.end_id, do_sample=False, **sampling)
        details = []
        for row in out:
            tokens, reason = finished(row[width:].tolist(), self.end_id)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            details.append(Generation(text, tokens, reason))
        return details
