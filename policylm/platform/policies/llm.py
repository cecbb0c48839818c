"""The return-conditioned LLM policy.

Prompt: the env adapter's template (system = rules + valid actions; user = ``Target return: R``,
``Step: t``, observation text), formatted with the model's chat template; the answer is the
action text. Or, for adapters trained that way, the ``compact`` form (``R=.. t=.. <obs> ->``;
see ``policylm.platform.prompts``, which the training rows are rendered with too, so training
and acting never drift apart).

Acting by scoring (default): the log-likelihood of every valid action in one batched forward
pass, then sampling from their softmax at ``temperature`` (0: argmax). Return conditioning on
data whose weak behaviour is random needs the sampling: greedy choice learns the expert and
ignores the target. Acting by generation: free text, parsed by the action codec; an invalid
answer falls back to a defined action and is counted. Thinking then acting (``mode=think``): a
short reasoning text within ``think_tokens``, then ``Action: <action>`` on a last line
(``policylm.platform.prompts``); the thought is kept with the step.

Adaptive targeting: the target in the prompt is the target minus the reward earned so far.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policylm.platform.engines import Engine, softmax
from policylm.platform.envs import EnvAdapter
from policylm.platform.envs.codecs import ActionParseError
from policylm.platform.policies.base import with_rates
from policylm.platform.policies.shots import Shot, pick_shots, render_shots
from policylm.platform.policy import Policy
from policylm.platform.prompts import (
    Step,
    action_candidates,
    history_window,
    prompt_target,
    render_prefix,
    render_prompt,
    split_answer,
    think_system,
)
from policylm.platform.records import check_form, check_text_options, read_record

log = logging.getLogger("policylm")


@dataclass
class Decision:
    """One chosen action: its env value and text, whether it came from a valid answer (False:
    generated text that did not parse, replaced by the fallback), and in score mode the
    log-likelihood of every valid action (natural log, in the codec's order)."""

    action: Any
    text: str
    valid: bool
    scores: list[float] | None
    thought: str | None = None  # think mode: the reasoning written before the action


@dataclass
class LLMPolicyConfig:
    """What an ``hf://`` URI sets (see README, Policy URIs)."""

    target_return: float = 0.0
    adaptive: bool = True
    mode: str = "score"          # score | generate | think (reason, then "Action: <action>")
    temperature: float = 1.0     # score: softmax temperature (0 = argmax); generate: sampling
    max_new_tokens: int = 16     # generate and think modes: tokens for the action
    think_tokens: int = 96       # think mode: the thought's token budget (before the action)
    fallback: str = "first"      # generate mode, on invalid text: first valid action | random
    prompt_form: str = "chat"    # chat | compact (policylm.platform.prompts)
    seed_offset: int = 0         # a second stream per episode seed (GRPO groups: same env
                                 # seed, different sampling)
    live: str = ""               # a name: this policy's engine is its own, and online
                                 # training updates its weights (no other policy sees them)
    norm: str = "sum"            # score mode: choose by the summed log-likelihood of an action's
                                 # tokens; "mean": per token; "pmi": minus the action's
                                 # log-likelihood without the observation (how much the
                                 # observation raises it; cancels the names' prior and length)
    history: int = 0             # earlier steps of the episode before this one, k to 2k - 1
                                 # (policylm.platform.prompts.history_start)
    guidance: float = 0.0        # score mode: return guidance weight w (see guide())
    shots: int = 0               # few-shot examples from shots_from's best episodes
    shots_from: str = ""         # (policylm.platform.policies.shots), drawn with shots_seed
    shots_seed: int = 0
    lead: str = ""               # without shots: the examples' text an adapter was trained with
    text_options: dict | None = None  # the env text options the adapter's rows were made with
                                      # (its record; None: unknown): checked against the env's


class LLMPolicy(Policy):
    """Acts for a batch of env slots with one engine call per step (see module docstring)."""

    def __init__(self, adapter: EnvAdapter, engine: Engine, cfg: LLMPolicyConfig):
        check_config(cfg, adapter)
        self.adapter, self.engine, self.cfg = adapter, engine, cfg
        self.template = engine.template  # the model's chat template, for render_prompt
        self.form = cfg.prompt_form  # checked by check_config
        self.system = adapter.system_text() if cfg.mode != "think" \
            else think_system(adapter.system_text())
        self.shots: list[Shot] = []
        if cfg.shots:
            self.shots = pick_shots(cfg.shots_from, cfg.shots, cfg.shots_seed)
        self.lead = render_shots(self.shots) if self.shots else cfg.lead
        self.prefix = render_prefix(engine.template, self.form, self.system, self.lead)
        self.candidates = action_candidates(self.form, list(adapter.codec.valid_actions or []))
        # norm=mean/pmi only: remote engines (openai://) have no tokenizer or scores here
        self.lengths = candidate_lengths(engine, self.candidates) if cfg.norm == "mean" else None
        self.baseline = self._baseline() if cfg.norm == "pmi" else None
        # context kept free for the answer: the longest candidate and the end of turn, or the
        # generated tokens (history windows are trimmed to leave it, see _fitting)
        self.reserve = 1 + max((len(engine.encode(c)) for c in self.candidates), default=0) \
            if cfg.mode == "score" and cfg.history else cfg.max_new_tokens \
            + (cfg.think_tokens if cfg.mode == "think" else 0)
        self.t: dict[int, int] = {}
        self.earned: dict[int, float] = {}
        self.rngs: dict[int, np.random.Generator] = {}
        self.past: dict[int, list[Step]] = {}  # slot -> its episode's steps in the window
        self.episodes: dict[int, Hashable] = {}  # slot -> its episode's engine session key
        self._ids = itertools.count()
        # think mode also counts answers without an action line (no_action)
        self.counts = {"actions": 0, "invalid": 0, **({"no_action": 0} if cfg.mode == "think"
                                                      else {})}
        self.thoughts: list[str | None] = []  # think mode: the last act()'s, in slot order
        # a cap on the whole prompt's tokens besides the engine's context (a server's
        # max_prompt_tokens): history windows are trimmed to it
        self.max_prompt_tokens: int | None = None
        self.targets: list[float] = []  # the targets the last act()'s prompts were written with

    def reset(self, slot: int, seed: int) -> None:
        if slot in self.episodes:  # the slot's last episode: its engine session is of no more use
            self.end_session(self.episodes[slot])
        self.t[slot], self.earned[slot] = 0, 0.0
        self.past[slot] = []
        self.episodes[slot] = (id(self), next(self._ids))
        self.rngs[slot] = np.random.default_rng(
            [seed, self.cfg.seed_offset] if self.cfg.seed_offset else seed)

    def observe(self, slots: Sequence[int], rewards: Sequence[float]) -> None:
        """Rewards of the last step, per slot (for the adaptive target)."""
        for s, r in zip(slots, rewards, strict=True):
            self.earned[s] = self.earned.get(s, 0.0) + float(r)

    def target(self, slot: int) -> float:
        """The target written into the prompt for ``slot`` now."""
        return prompt_target(self.cfg.target_return, self.earned.get(slot, 0.0),
                             self.cfg.adaptive)

    def window(self, slot: int) -> list[Step]:
        """The earlier steps the prompt of ``slot`` holds now (none without ``history``)."""
        if not self.cfg.history:
            return []
        self.past[slot] = history_window(self.past.get(slot, []), self.t.get(slot, 0),
                                         self.cfg.history)
        return self.past[slot]

    def remember(self, slots: Sequence[int], obs_texts: Sequence[str], targets: Sequence[float],
                 actions: Sequence[str]) -> None:
        """Keep each slot's step (target, step, observation text, action text) for
        ``history``."""
        if not self.cfg.history:
            return
        for s, o, r, a in zip(slots, obs_texts, targets, actions, strict=True):
            self.past.setdefault(s, []).append((r, self.t.get(s, 0), o, a))

    def prompts(self, observations: Sequence[Any], slots: Sequence[int]) -> list[str]:
        return [
            render_prompt(self.template, self.form, self.system, self.target(s), self.t.get(s, 0),
                          self.adapter.encode(o), self.window(s), self.lead)
            for o, s in zip(observations, slots, strict=True)
        ]

    def act(self, observations: Sequence[Any], slots: Sequence[int]) -> list[Any]:
        for s in slots:
            if s not in self.rngs:
                self.reset(s, s)
        texts = [self.adapter.encode(o) for o in observations]
        targets = [self.target(s) for s in slots]
        decisions = self.decide(texts, targets, [self.t.get(s, 0) for s in slots],
                                [self.rngs[s] for s in slots], [self.window(s) for s in slots],
                                [self.episodes[s] for s in slots])
        self.remember(slots, texts, targets, [d.text for d in decisions])
        self.thoughts = [d.thought for d in decisions]
        self.targets = targets
        for s in slots:
            self.t[s] = self.t.get(s, 0) + 1
        return [d.action for d in decisions]

    def decide(self, obs_texts: Sequence[str], targets: Sequence[float], steps: Sequence[int],
               rngs: Sequence[np.random.Generator], pasts: Sequence[Sequence[Step]] | None = None,
               sessions: Sequence[Hashable] | None = None) -> list[Decision]:
        """One engine call for a batch of (observation text, target in the prompt, step,
        random stream, earlier steps in the window, episode key): the state-free core of
        :meth:`act`, which the Serve deployment calls with its per-episode state. ``sessions``
        (with history) lets the engine reuse each episode's cached prompt."""
        prompts, pasts = self.render(obs_texts, targets, steps, pasts)
        codec = self.adapter.codec
        if self.cfg.mode == "score":
            keys = list(sessions) if self.cfg.history and sessions else None
            if self.cfg.guidance:  # the same prompts with the null target, in the same call
                prompts += [render_prompt(self.template, self.form, self.system, None, t, text,
                                          past, self.lead)
                            for text, t, past in zip(obs_texts, steps, pasts, strict=True)]
                keys = keys and keys + [None if k is None else (k, "null target") for k in keys]
            kw = {"sessions": keys} if keys else {}
            logps = self.engine.score(prompts, [self.candidates] * len(prompts),
                                      prefix=self.prefix, **kw)
            n = len(obs_texts)
            nulls = logps[n:] if self.cfg.guidance else [None] * n
            out = []
            for lp, null, rng in zip(logps[:n], nulls, rngs, strict=True):
                guided = lp if null is None else guide(lp, null, self.cfg.guidance)
                i = self._choose(self._normed(guided), rng)
                out.append(Decision(codec.from_index(i), codec.valid_actions[i], True,
                                    [float(x) for x in lp]))
        elif self.cfg.mode == "think":
            texts = self._generate(prompts, self.cfg.think_tokens + self.cfg.max_new_tokens, rngs)
            out = [self._think(text, rng) for text, rng in zip(texts, rngs, strict=True)]
        else:
            texts = self._generate(prompts, self.cfg.max_new_tokens, rngs)
            out = [self._parse(text, rng) for text, rng in zip(texts, rngs, strict=True)]
        self.counts["actions"] += len(out)
        return out

    def render(self, obs_texts: Sequence[str], targets: Sequence[float], steps: Sequence[int],
               pasts: Sequence[Sequence[Step]] | None = None
               ) -> tuple[list[str], list[Sequence[Step]]]:
        """The prompts :meth:`decide` reads for these rows (system text, few-shot examples,
        the history window trimmed to fit the context, the observation), and those windows."""
        pasts = [self._fitting(text, target, t, past) for text, target, t, past
                 in zip(obs_texts, targets, steps, pasts or [()] * len(obs_texts), strict=True)]
        prompts = [render_prompt(self.template, self.form, self.system, target, t, text, past,
                                 self.lead)
                   for text, target, t, past in zip(obs_texts, targets, steps, pasts,
                                                    strict=True)]
        return prompts, pasts

    def end_session(self, key: Hashable) -> None:
        """Free the engine's cached prompts of an ended episode (``key``: its session key, the
        one :meth:`decide` was given), with the null-target prompts guidance scores."""
        drop = getattr(self.engine, "drop_session", None)
        if drop is not None and self.cfg.history:
            drop(key)
            drop((key, "null target"))

    def _generate(self, prompts: Sequence[str], max_new_tokens: int,
                  rngs: Sequence[np.random.Generator]) -> list[str]:
        """Generated answers; sampling draws each row's seed from its episode's stream (as
        scoring draws its choice), so an episode's answers do not depend on which prompts
        share the engine call, which replica serves it, or a global random state."""
        if self.cfg.temperature <= 0:  # greedy: nothing drawn
            return self.engine.generate(prompts, max_new_tokens, self.cfg.temperature)
        seeds = [int(rng.integers(2**63)) for rng in rngs]
        return self.engine.generate(prompts, max_new_tokens, self.cfg.temperature, seeds=seeds)

    def _fitting(self, obs_text: str, target: float, t: int, past: Sequence[Step]
                 ) -> Sequence[Step]:
        """``past`` without its oldest steps as far as needed for the prompt to fit the
        engine's context (with room for the answer) and ``max_prompt_tokens`` (a server's
        limit), so a long history loses its oldest steps rather than the engine cutting into
        the newest ones or the server refusing the step; unchanged when it fits."""
        limit = getattr(self.engine, "max_length", None)
        if not past or (limit is None and self.max_prompt_tokens is None):
            return past
        room = min(limit - self.reserve if limit is not None else self.max_prompt_tokens,
                   self.max_prompt_tokens if self.max_prompt_tokens is not None else limit)
        while past:
            prompt = render_prompt(self.template, self.form, self.system, target, t, obs_text,
                                   past, self.lead)
            # a token holds at least one byte: a prompt of fewer bytes fits without encoding
            if len(prompt.encode()) <= room or len(self.engine.encode(prompt)) <= room:
                break
            past = past[1:]
        return past

    def _baseline(self) -> np.ndarray:
        """Each action's log-likelihood after a prompt with no observation (target 0, step 0):
        the prior that ``norm=pmi`` subtracts."""
        empty = render_prompt(self.template, self.form, self.system, 0, 0, "", lead=self.lead)
        return self.engine.score([empty], [self.candidates], prefix=self.prefix)[0]

    def _normed(self, logps: np.ndarray) -> np.ndarray:
        """The scores the choice is made on (see ``norm``)."""
        if self.lengths is not None:
            return logps / self.lengths
        if self.baseline is not None:
            return logps - self.baseline
        return logps

    def _choose(self, logps: np.ndarray, rng: np.random.Generator) -> int:
        if self.cfg.temperature <= 0:
            return int(np.argmax(logps))
        p = softmax(logps, self.cfg.temperature)
        return int(rng.choice(len(p), p=p))

    def _parse(self, text: str, rng: np.random.Generator) -> Decision:
        codec = self.adapter.codec
        try:
            action = codec.parse(text)
            return Decision(action, codec.to_text(action), True, None)
        except ActionParseError:
            self.counts["invalid"] += 1
            if self.counts["invalid"] in (1, 10, 100, 1000):
                log.warning("invalid action text %r (%d so far); falling back to %s", text,
                            self.counts["invalid"], self.cfg.fallback)
            if self.cfg.fallback == "random" or not codec.valid_actions:
                space = self.adapter.action_space
                space.seed(int(rng.integers(2**31)))
                action = space.sample()
            else:
                action = codec.from_index(0)
            return Decision(action, codec.to_text(action), False, None)

    def _think(self, text: str, rng: np.random.Generator) -> Decision:
        """A think-mode answer: the thought, and the action of its last ``Action:`` line (an
        answer without one counts as invalid, with ``no_action``, and falls back)."""
        thought, action_text = split_answer(text)
        if action_text is None:
            self.counts["no_action"] += 1
        decision = self._parse("" if action_text is None else action_text, rng)
        decision.thought = thought
        return decision

    def stats(self) -> dict[str, float]:
        """Actions taken, invalid generations and their rate; in think mode also the answers
        without an action line and their rate (rates None before any action)."""
        return with_rates(self.counts)

    def set_lora(self, tensors: dict[str, Any], scaling: float) -> int:
        """Put online-trained LoRA weights into this policy's engine when it is live (``live=``
        in its URI: the engine is its own); other LLM policies keep the weights they asked
        for. Returns the engines updated."""
        if not self.cfg.live:
            return 0
        self.engine.set_lora(tensors, scaling)
        return 1


def guide(logps: np.ndarray, null_logps: np.ndarray, weight: float) -> np.ndarray:
    """Return guidance (classifier-free guidance over the target): ``logp(a | R, s) + w *
    (logp(a | R, s) - logp(a | ?, s))``, the actions' scores with the target pushed ``w`` times
    further from the scores without it (``?``, the null target a policy trained with
    ``sft target_dropout`` knows). ``w`` 0: the scores unchanged."""
    return logps + weight * (logps - null_logps)


def candidate_lengths(engine: Engine, candidates: Sequence[str]) -> np.ndarray:
    """Tokens each candidate's score sums over (the engine contract's ``scored_tokens``: its
    own, plus the end of turn when some candidate is longer than one token)."""
    from policylm.platform.engines.contract import scored_tokens

    scored = scored_tokens([[engine.encode(c) for c in candidates]], end_id=-1)[0]
    return np.array([len(t) for t in scored], dtype=np.float64)


# the query parameters of an hf:// URI
HF_PARAMS = frozenset({
    "adapter", "target_return", "adaptive", "mode", "temperature", "max_new_tokens",
    "think_tokens", "fallback", "engine", "dtype", "prompt", "seed_offset", "norm", "live",
    "history", "guidance", "shots", "shots_from", "shots_seed", "lead_from"})


def check_config(cfg: LLMPolicyConfig, adapter: EnvAdapter | None = None) -> None:
    """Raise ValueError naming the setting when ``cfg`` cannot act (for ``adapter``'s env,
    when given)."""
    if cfg.mode not in ("score", "generate", "think"):
        raise ValueError(f"mode must be score, generate or think, got {cfg.mode!r}")
    if cfg.mode == "think" and cfg.prompt_form != "chat":
        raise ValueError("mode=think writes a thought before the action: it needs "
                         "prompt=chat (the compact form's answer is the action alone)")
    if cfg.fallback not in ("first", "random"):
        raise ValueError(f"fallback must be first or random, got {cfg.fallback!r}")
    if cfg.norm not in ("sum", "mean", "pmi"):
        raise ValueError(f"norm must be sum, mean or pmi, got {cfg.norm!r}")
    if cfg.guidance and cfg.mode != "score":
        raise ValueError("guidance needs mode=score (it contrasts the scores of the actions "
                         "with and without the target)")
    if cfg.history < 0:
        raise ValueError(f"history must be >= 0 (earlier steps in the prompt), got "
                         f"{cfg.history}")
    if cfg.temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0: argmax), got {cfg.temperature}")
    if cfg.shots and not cfg.shots_from:
        raise ValueError(f"shots={cfg.shots} needs shots_from=<trajectory or run directory> "
                         "to draw the examples from")
    check_form(cfg.prompt_form)
    if adapter is not None:
        check_text_options(cfg.text_options, adapter.text_options, adapter.env_id)
    if adapter is not None and cfg.mode == "score" and not adapter.codec.valid_actions:
        raise ValueError(f"{adapter.env_id}: actions cannot be listed; use mode=generate")


@dataclass(frozen=True)
class LLMPolicySpec:
    """An ``hf://`` URI parsed and checked, with no weights loaded: the model, its adapter, the
    engine and dtype it loads with, and the policy's settings (targets as numbers)."""

    model: str
    adapter: str
    engine: str
    dtype: str
    cfg: LLMPolicyConfig


def parse_llm_spec(model: str, params: dict[str, str]) -> LLMPolicySpec:
    """The spec of ``hf://<model>?adapter=..&target_return=..&adaptive=1&mode=..&temperature=..
    &max_new_tokens=n&think_tokens=n&engine=hf|vllm&dtype=auto&prompt=chat|compact
    &norm=sum|mean|pmi&live=<name>&history=k&guidance=w&shots=k&shots_from=<dir>&shots_seed=s
    &lead_from=<dir>`` (the query already split into ``params``). Without ``prompt``,
    ``history``, ``shots`` and ``mode``, what is recorded with the adapter (or model directory)
    is used: its form, its steps of history, the few-shot examples it was trained with
    (``lead_from``: those recorded in another directory, for a live adapter whose weights arrive
    from a learner), think mode for rows that thought. Reads only the small records; raises
    ValueError naming the parameter."""
    from pathlib import Path

    from policylm.platform.engines.contract import dtype_name
    from policylm.platform.engines.models import EMBEDDED_NAME

    unknown = set(params) - HF_PARAMS
    if unknown:
        raise ValueError(f"unknown hf:// parameters {sorted(unknown)}; known: "
                         f"{sorted(HF_PARAMS)}")

    def number(key: str, cast: type, default: Any) -> Any:
        raw = params.get(key)
        try:
            return cast(raw) if raw not in (None, "") else default
        except ValueError:
            kind = "an integer" if cast is int else "a number"
            raise ValueError(f"{key}={raw!r} is not {kind}") from None

    def local(path: str) -> bool:  # a path on disk, not a hub id (org/name)
        return path.startswith(("/", ".", "~")) or path.count("/") >= 2

    for key in ("adapter", "shots_from", "lead_from"):
        value = params.get(key)
        if value and (key != "adapter" or local(value)) and not Path(value).exists():
            raise ValueError(f"{key}={value} does not exist; give an existing directory")
    if model != EMBEDDED_NAME and local(model) and not Path(model).is_dir():
        raise ValueError(f"model directory {model} does not exist")
    engine, dtype = params.get("engine", "hf"), params.get("dtype", "auto")
    if engine not in ("hf", "vllm"):
        raise ValueError(f"engine {engine!r} is unknown; use engine=hf or engine=vllm")
    dtype_name(dtype)
    record = read_record(params.get("adapter"), model)  # how the adapter (or model) prompts
    cfg = LLMPolicyConfig(
        target_return=number("target_return", float, 0.0),
        adaptive=params.get("adaptive", "1").lower() in ("1", "true", "yes"),
        mode=params.get("mode") or record.mode or "score",
        temperature=number("temperature", float, 1.0),
        max_new_tokens=number("max_new_tokens", int, 16),
        think_tokens=number("think_tokens", int, 96),
        fallback=params.get("fallback", "first"),
        prompt_form=params.get("prompt") or record.prompt_form,
        seed_offset=number("seed_offset", int, 0),
        norm=params.get("norm", "sum"),
        live=params.get("live", ""),
        history=number("history", int, record.history),
        guidance=number("guidance", float, 0.0),
        shots=number("shots", int, 0),
        shots_from=params.get("shots_from", ""),
        shots_seed=number("shots_seed", int, 0),
        lead=read_record(params["lead_from"], model).lead if params.get("lead_from")
        else record.lead,
        text_options=record.text_options,
    )
    check_config(cfg)
    return LLMPolicySpec(model, params.get("adapter", ""), engine, dtype, cfg)


def llm_policy_from_params(model: str, params: dict[str, str], adapter: EnvAdapter) -> LLMPolicy:
    """The LLM policy of ``hf://<model>?<params>`` (see :func:`parse_llm_spec`)."""
    from policylm.platform.engines import get_engine

    spec = parse_llm_spec(model, params)
    engine = get_engine(spec.model, spec.adapter, spec.engine, spec.dtype, live=spec.cfg.live)
    return LLMPolicy(adapter, engine, spec.cfg)
