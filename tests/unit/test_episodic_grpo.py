"""Episodic GRPO without Ray: the batch (group-normalised advantages and prompts by hand), LoRA
weights applied to an engine equal the PEFT model, and an update moves the policy."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from policylm.platform.data import trajectories as tr
from policylm.platform.data.returns import step_group_advantages
from policylm.platform.training.episodic_grpo import build_batch, remaining_targets
from policylm.platform.training.learner import EpisodicLearner


def steps_table(episodes):
    """Trajectory rows for ``[(episode id, seed, rewards, actions[, observations])]``
    (CartPole-like; the observation at step t is ``o<t>`` unless given)."""
    rows = {c: [] for c in (tr.RUN_ID, tr.EPISODE_ID, tr.ENV_ID, tr.POLICY_URI, tr.SKILL,
                            tr.SEED, tr.AGENT_ID, tr.T, tr.OBS_TEXT, tr.ACTION_INDEX, tr.REWARD,
                            tr.TERMINATED, tr.TRUNCATED)}
    for eid, seed, rewards, actions, *obs in episodes:
        texts = obs[0] if obs else [f"o{t}" for t in range(len(rewards))]
        for t, (r, a) in enumerate(zip(rewards, actions, strict=True)):
            for c, v in ((tr.RUN_ID, "r"), (tr.EPISODE_ID, eid), (tr.ENV_ID, "CartPole-v1"),
                         (tr.POLICY_URI, "hf://x"), (tr.SKILL, "g"), (tr.SEED, seed),
                         (tr.AGENT_ID, 0), (tr.T, t), (tr.OBS_TEXT, texts[t]),
                         (tr.ACTION_INDEX, a), (tr.REWARD, r),
                         (tr.TERMINATED, t == len(rewards) - 1), (tr.TRUNCATED, False)):
                rows[c].append(v)
    return pa.table(rows)


class Compact:  # render_prompt needs a chat template only for the chat form
    def chat_prompt(self, system, user):
        raise AssertionError("compact form renders no chat template")


def test_batch_advantages_and_prompts_by_hand(cartpole):
    steps = steps_table([
        ("a1", 7, [1, 1, 1], [1, 0, 1]),    # seed 7: returns 3 and 1: mean 2, std 1
        ("a2", 7, [1], [0]),
        ("b1", 9, [1, 1], [1, 1]),          # seed 9: returns 2 and 2: no spread, dropped
        ("b2", 9, [1, 1], [0, 0]),
    ])
    batch = build_batch(steps, cartpole, "compact", Compact(), target=10)
    assert (batch.groups, batch.filtered_groups) == (2, 1)
    assert batch.advantages == [1.0, 1.0, 1.0, -1.0]
    assert batch.chosen == [1, 0, 1, 0]
    # adaptive: 10 minus the reward earned before each step
    assert batch.prompts == ["R=10 t=0 o0 ->", "R=9 t=1 o1 ->", "R=8 t=2 o2 ->",
                             "R=10 t=0 o0 ->"]
    assert remaining_targets([1, 2.5, 1], 10, adaptive=False) == [10, 10, 10]


def test_step_level_advantages_by_hand(cartpole):
    # gamma 0.5 and a reward of 1 at the goal: the return-to-go halves per step before it
    steps = steps_table([
        ("e1", 7, [0, 0, 1], [1, 0, 1], ["A", "B", "G"]),        # rtg .25 .5 1
        ("e2", 7, [0, 0, 0, 1], [0, 1, 0, 1], ["A", "C", "B", "G"]),  # rtg .125 .25 .5 1
        ("e3", 9, [0, 1], [1, 1], ["A", "G"]),                   # return 1, rtg .5 1
        ("e4", 9, [0, 0], [0, 0], ["A", "D"]),                   # return 0
        ("e5", 11, [0, 0], [0, 0], ["A", "B"]),                  # seed 11: both fail
        ("e6", 11, [0, 0], [1, 1], ["A", "C"]),
    ])
    episodic = build_batch(steps, cartpole, "compact", Compact(), target=10)
    assert (episodic.groups, episodic.filtered_groups) == (3, 2)  # only seed 9 has spread
    assert episodic.advantages == [1.0, 1.0, -1.0, -1.0]
    both = build_batch(steps, cartpole, "compact", Compact(), target=10, step_weight=0.5,
                       step_gamma=0.5)
    # seed 7: both episodes return 1 (no episode signal), but state A was left towards the goal
    # faster in e1 (.25 against .125): +-1 at A, and B (.5, .5) and G carry nothing.
    # seed 9: episode advantages +-1, plus 0.5 * (+-1) at A (.5 against 0); G and D seen once.
    assert both.advantages == [0.5, -0.5, 1.5, 1.0, -1.5, -1.0]
    assert both.chosen == [1, 0, 1, 1, 0, 0]
    assert both.prompts[:2] == ["R=10 t=0 A ->", "R=10 t=0 A ->"]
    assert (both.groups, both.filtered_groups) == (3, 1)  # seed 11 carries no signal at all


def test_step_group_advantages_three_visits():
    # one anchor state seen three times in group "a" (values 1, .5, .5: mean 2/3, std 1/sqrt(18))
    adv = step_group_advantages([1.0, 0.5, 0.5, 0.7, 0.9], ["a", "a", "a", "a", "b"],
                                ["s", "s", "s", "t", "s"])
    assert adv == pytest.approx([2 ** 0.5, -(2 ** -0.5), -(2 ** -0.5), 0.0, 0.0])


def make_learner(tiny_model_dir, adapter, **kwargs):
    """A learner over the tiny model with a LoRA adapter whose B != 0 (a real delta)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                             init_lora_weights=False))
    return EpisodicLearner(model, AutoTokenizer.from_pretrained(tiny_model_dir), adapter,
                           "compact", **kwargs)


@pytest.fixture()
def learner(tiny_model_dir, cartpole):
    return make_learner(tiny_model_dir, cartpole, temperature=1.0, lr=5e-2)


def test_engine_with_synced_lora_scores_as_the_learner(learner, tiny_model_dir):
    from policylm.platform.engines.hf import HFEngine

    engine = HFEngine(tiny_model_dir, dtype="fp32")
    prompts = ["R=500 t=0 x=0.01 v=0 a=0.02 w=0 ->", "R=20 t=5 x=-1 v=0.5 a=0.1 w=-0.3 ->"]
    before = np.stack(engine.score(prompts, [[" left", " right"]] * 2))
    weights, scaling = learner.lora_weights()
    assert scaling == 2.0 and any("lora_B" in k for k in weights)
    assert engine.set_lora(weights, scaling) > 0
    after = np.stack(engine.score(prompts, [[" left", " right"]] * 2))
    with torch.no_grad():
        want = learner.scores(prompts).numpy()
    assert not np.allclose(before, after)  # the weights reached the engine
    assert np.allclose(after, want, atol=1e-4)  # and it now scores as the learner's model
    engine.set_lora(weights, scaling)  # applied again: replaces the delta, does not add it
    assert np.allclose(np.stack(engine.score(prompts, [[" left", " right"]] * 2)), want,
                       atol=1e-4)


def test_multi_token_candidates_score_as_the_engine(tiny_model_dir):
    """BabyAI's action names are several tokens each: the learner reads each token's
    log-probability where the engine does (then the end of turn) and sums them, so its scores
    equal the engine's given the same LoRA weights."""

    from policylm.platform.engines.hf import HFEngine
    from policylm.platform.envs import make_adapter

    babyai = make_adapter("BabyAI-GoToRedBallNoDists-v0")
    learner = make_learner(tiny_model_dir, babyai)
    assert not learner.single
    engine = HFEngine(tiny_model_dir, dtype="fp32")
    engine.set_lora(*learner.lora_weights())
    prompts = ["R=1 t=0 a wall 2 steps left ->", "R=0.5 t=3 a red ball 1 step forward ->"]
    cands = [" " + a for a in babyai.codec.valid_actions]
    with torch.no_grad():
        want = learner.scores(prompts).numpy()
    assert want.shape == (2, len(cands))
    assert np.allclose(np.stack(engine.score(prompts, [cands] * 2)), want, atol=1e-4)


def test_live_weights_never_reach_other_policies_in_the_process(learner, tiny_model_dir,
                                                                 tmp_path):
    """In one process (rollout_workers=0) the trained weights go to the live policy's engine
    only: a plain hf:// policy of the same model afterwards scores as the base model."""
    from policylm.actors.rollout import RolloutSpec, RolloutWorker, Weights
    from policylm.platform.engines.hf import HFEngine

    worker = RolloutWorker(RolloutSpec("CartPole-v1", num_envs=1, out_dir=str(tmp_path)))
    uri = f"hf://{tiny_model_dir}?dtype=fp32&prompt=compact&target_return=9"
    obs = [[0.01, 0.0, 0.02, 0.0]]
    weights, scaling = learner.lora_weights()
    live = worker.action_scores(uri + "&live=grpo", obs, Weights(1, scaling, weights))
    base = worker.action_scores(uri, obs)  # built after the update, in the same process
    fresh = HFEngine(tiny_model_dir, dtype="fp32").score(["R=9 t=0 x=0.01 v=0 a=0.02 w=0 ->"],
                                                        [[" left", " right"]])
    assert np.allclose(base, fresh, atol=1e-6)
    assert not np.allclose(live, base)


def test_update_raises_the_advantaged_action(learner):
    from policylm.platform.training.learner import StepBatch

    prompts = ["R=500 t=0 x=0 v=0 a=0 w=0 ->"] * 8
    with torch.no_grad():
        p0 = learner.action_logps(prompts[:1], [1]).exp().item()
    sent, _ = learner.lora_weights()  # as sent to rollouts that may play after the update
    kept = {k: v.clone() for k, v in sent.items()}
    batch = StepBatch(prompts, [1] * 4 + [0] * 4, [1.0] * 4 + [-1.0] * 4, 1, 0)
    stats = learner.update(batch, epochs=3)
    with torch.no_grad():
        p1 = learner.action_logps(prompts[:1], [1]).exp().item()
    assert p1 > p0 + 0.05 and stats["rows"] == 8
    now, _ = learner.lora_weights()
    assert all(torch.equal(sent[k], kept[k]) for k in kept)  # a copy: the update left it be
    assert not all(torch.equal(now[k], kept[k]) for k in kept)


def test_kl_is_measured_to_the_starting_adapter(tiny_model_dir, cartpole):
    """beta > 0 from a trained adapter (B != 0): the reference is that adapter, so the first
    minibatch, before any optimizer step, has KL exactly 0 (the adapter-free model would differ);
    once the weights move, the next update measures a positive KL and the reference is unchanged."""
    from policylm.platform.training.learner import StepBatch

    learner = make_learner(tiny_model_dir, cartpole, lr=5e-2, beta=0.1)
    model = learner.model
    start = {k: v.clone() for k, v in learner.reference.items()}
    prompts = ["R=500 t=0 x=0 v=0 a=0 w=0 ->", "R=20 t=5 x=-1 v=0.5 a=0.1 w=-0.3 ->"]
    batch = StepBatch(prompts, [1, 0], [1.0, -1.0], 1, 0)
    with torch.no_grad(), model.disable_adapter():
        free = learner.action_logps(prompts, [1, 0])
    with torch.no_grad():
        assert not torch.allclose(learner.action_logps(prompts, [1, 0]), free, atol=1e-3)
    first = learner.update(batch)  # one minibatch: its KL is taken before the step
    assert first["kl"] == pytest.approx(0.0, abs=1e-9)
    second = learner.update(batch)
    assert second["kl"] > 1e-6
    assert all(torch.equal(learner.reference[k], start[k]) for k in start)
    now = learner.lora_weights()[0]  # the update's weights are back in the model, not the start
    assert not all(torch.equal(now[k], start[k].float()) for k in start)


def test_an_update_in_pieces_equals_the_update_in_one(learner):
    """micro_tokens cuts a minibatch's passes into pieces whose gradients are summed: the
    update (weights and reported figures) equals the one of whole minibatches, while each
    forward holds at most one piece (here: rows of 23-24 tokens, pieces of one row)."""
    import copy

    from policylm.platform.training.learner import StepBatch

    prompts = [f"R={500 - 7 * i} t={i} x={0.1 * i:.1f} v=0 a=0 w=0 ->" for i in range(12)]
    batch = StepBatch(prompts, [i % 2 for i in range(12)],
                      [1.0, -0.5, 0.25, -1.0, 0.75, 0.5] * 2, 1, 0)
    whole = learner
    whole.minibatch, whole.micro_tokens = 8, 10**6
    pieces = copy.deepcopy(whole)
    pieces.micro_tokens = 30
    for one in (whole, pieces):  # plain SGD: the step is the gradient itself (Adam would
        # magnify rounding in gradients near zero into steps of +-lr)
        one.optimizer = torch.optim.SGD([p for p in one.model.parameters() if p.requires_grad],
                                        lr=0.5)
    cost = pieces._row_tokens(batch)
    assert all(23 <= c <= 24 for c in cost)
    assert pieces._pieces(cost, 0, 8) == [(i, i + 1) for i in range(8)]
    assert whole._pieces(cost, 0, 8) == [(0, 8)]
    start = whole.lora_weights()[0]
    a, b = whole.update(batch, epochs=2), pieces.update(batch, epochs=2)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    assert a["clip_fraction"] == pytest.approx(b["clip_fraction"], abs=1e-9)
    wa, wb = whole.lora_weights()[0], pieces.lora_weights()[0]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert not all(torch.equal(wa[k], start[k]) for k in wa)  # the update moved them


def test_generated_actions_logps_batch_and_update(tiny_model_dir):
    """Continuous actions: the batch carries each step's action text; the learner's
    log-probability is the text's, token by token at the temperature (checked by hand), and an
    update with a positive advantage makes that text more likely."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policylm.platform.envs import make_adapter
    from policylm.platform.training.learner import StepBatch

    cheetah = make_adapter("HalfCheetah-v5")
    steps = steps_table([("a", 1, [1.0, 0.5], [-1, -1]), ("b", 1, [-1.0], [-1])])
    texts = ["<action>0.10 0 0 0 0 0</action>", "<action>1 1 1 1 1 1</action>",
             "<action>0 0 0 0 0 0</action>"]
    steps = steps.append_column(tr.ACTION_TEXT, pa.array(texts))
    batch = build_batch(steps, cheetah, "compact", Compact(), target=10)
    assert batch.completions == [" " + t for t in texts] and batch.advantages == [1, 1, -1]

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir,
                                                                dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    learner = EpisodicLearner(model, tok, cheetah, "compact", temperature=0.7, lr=1e-3)
    assert learner.generated
    prompt, completion = "R=10 t=0 <observation>0 1</observation> ->", " " + texts[0]
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = [*tok(completion, add_special_tokens=False)["input_ids"], learner.end]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p_ids + c_ids])).logits[0].float() / 0.7
        want = sum(torch.log_softmax(logits[len(p_ids) - 1 + j], -1)[c].item()
                   for j, c in enumerate(c_ids))
        got = learner.action_logps([prompt], [-1], [completion]).item()
    assert got == pytest.approx(want, abs=1e-4)
    before = got
    learner.update(StepBatch([prompt] * 4, [-1] * 4, [1.0] * 4, 1, 0, [completion] * 4),
                   epochs=2)
    with torch.no_grad():
        after = learner.action_logps([prompt], [-1], [completion]).item()
    assert after > before + 0.5


def test_subsample_keeps_rows_aligned():
    from policylm.platform.training.episodic_grpo import subsample
    from policylm.platform.training.learner import StepBatch

    batch = StepBatch([f"p{i}" for i in range(10)], list(range(10)), [float(i) for i in range(10)],
                      3, 1, versions=[i % 3 for i in range(10)])
    assert subsample(batch, 0, 0) is batch and subsample(batch, 10, 0) is batch
    small = subsample(batch, 4, seed=1)
    assert len(small.prompts) == 4 and len(set(small.chosen)) == 4
    assert all(p == f"p{c}" and a == float(c) for p, c, a in
               zip(small.prompts, small.chosen, small.advantages, strict=True))
    assert (small.groups, small.filtered_groups, small.completions) == (3, 1, [])
    assert small.versions == [c % 3 for c in small.chosen]
    assert small.chosen == sorted(small.chosen)  # episode order kept


def test_batch_carries_the_weight_version_of_each_step(cartpole):
    steps = steps_table([("a1", 7, [1, 1], [1, 0]), ("a2", 7, [1], [0])])
    steps = steps.append_column(tr.POLICY_VERSION, pa.array([3, 3, 2], pa.int64()))
    assert build_batch(steps, cartpole, "compact", Compact(), target=10).versions == [3, 3, 2]
    unknown = steps.set_column(steps.schema.get_field_index(tr.POLICY_VERSION), tr.POLICY_VERSION,
                               pa.array([3, None, 2], pa.int64()))
    with pytest.raises(ValueError, match="1 steps carry no weight version"):
        build_batch(unknown, cartpole, "compact", Compact(), target=10)


def test_importance_weights_of_stale_steps_by_hand(learner):
    """Steps played by an older version are weighted min(exp(proximal - behaviour), cap), the
    behaviour log-probability under the weights that played them (kept by the learner); the
    weights reach the loss (the first step's, where the ratio is 1: -mean(w * adv)); the
    current weights are back afterwards, and the learner refuses steps older than its cap."""
    from policylm.platform.training.learner import StepBatch

    learner.max_staleness, learner.max_weight = 1, 1.3
    prompts = ["R=500 t=0 x=0 v=0 a=0 w=0 ->", "R=20 t=3 x=1 v=0 a=0 w=1 ->"] * 2
    chosen = [1, 0, 0, 1]
    with torch.no_grad():
        v0 = learner.action_logps(prompts, chosen)  # version 0 plays these
    stats = learner.update(StepBatch(prompts, chosen, [1.0, 1.0, -1.0, -1.0], 1, 0,
                                     versions=[0] * 4))
    assert learner.version == 1 and stats["staleness"] == 0.0
    assert stats["importance_weight"] == 1.0 and stats["weight_truncated"] == 0.0
    with torch.no_grad():
        v1 = learner.action_logps(prompts, chosen)
        adv = [1.0, -0.5, 2.0, 1.0]
        stale = StepBatch(prompts, chosen, adv, 1, 0, versions=[0, 1, 0, 1])
        got = learner.importance_weights(stale, v1)
        after = learner.action_logps(prompts, chosen)
    want = [min(float(torch.exp(v1[0] - v0[0])), 1.3), 1.0,
            min(float(torch.exp(v1[2] - v0[2])), 1.3), 1.0]
    assert not torch.allclose(v0, v1)  # the update moved the policy: weights differ from 1
    assert got.tolist() == pytest.approx(want, rel=1e-5)
    assert torch.equal(after, v1)  # the current weights were put back exactly
    stats = learner.update(stale)  # one minibatch, one epoch: the loss of the first step
    assert stats["staleness"] == 0.5 and stats["importance_weight"] == pytest.approx(
        sum(want) / 4, rel=1e-5)
    weighted = -sum(w * a for w, a in zip(want, adv, strict=True)) / 4
    assert abs(weighted - (-sum(adv) / 4)) > 0.01  # the weights make a difference here
    assert stats["loss"] == pytest.approx(weighted, rel=1e-5)
    assert stats["weight_truncated"] == sum(w == 1.3 for w in want) / 4
    assert learner.version == 2 and sorted(learner.snapshots) == [1]  # version 0 is past the cap
    with pytest.raises(ValueError, match=r"version\(s\) \[0\].*trains only on versions 1..2"):
        learner.update(stale)
    assert learner.version == 2  # a refused batch changes nothing


def test_unchanged_weights_give_weight_one(learner):
    """An update that trained nothing leaves the weights as they were: the steps its version
    played are weighted exactly 1 by the next (the correction adds nothing when none is due)."""
    from policylm.platform.training.learner import StepBatch

    learner.max_staleness = 2
    prompts, chosen = ["R=500 t=0 x=0 v=0 a=0 w=0 ->"] * 2, [0, 1]
    assert learner.update(StepBatch([], [], [], 1, 1))["rows"] == 0
    with torch.no_grad():
        now = learner.action_logps(prompts, chosen)
        weight = learner.importance_weights(StepBatch(prompts, chosen, [1.0, -1.0], 1, 0,
                                                      versions=[0, 0]), now)
    assert weight.tolist() == [1.0, 1.0]


def test_fresh_episodes_keep_versions_within_the_cap():
    from policylm.jobs.grpo_episodes import fresh_episodes

    steps = steps_table([(e, 1, [1, 1], [0, 1]) for e in "abcde"])
    steps = steps.append_column(tr.POLICY_VERSION, pa.array(
        [0, 0, 1, 1, 2, 2, None, None, 3, 3], pa.int64()))
    kept, dropped = fresh_episodes(steps, version=2, max_staleness=1)
    assert sorted(set(kept.column(tr.EPISODE_ID).to_pylist())) == ["b", "c"] and dropped == 3
    kept, dropped = fresh_episodes(steps, version=2)  # synchronous: its own version only
    assert set(kept.column(tr.EPISODE_ID).to_pylist()) == {"c"} and dropped == 4


def test_heldout_checks_refuse_training_seeds_and_guidance_of_generated_actions():
    from policylm.jobs.grpo_episodes import GrpoEpisodesConfig, check_heldout
    from policylm.platform.config import ConfigError, config_from_dict
    from policylm.platform.envs import make_adapter

    def cfg(**kw):
        return config_from_dict(GrpoEpisodesConfig, {"iterations": 3,
                                                "heldout_episodes": 20, **kw})

    cartpole = make_adapter("CartPole-v1")
    check_heldout(cfg(), cartpole)  # the test range is no iteration's base seed (0, 7919, 15838)
    with pytest.raises(ConfigError, match="heldout_seed: 7919 gives 4 env seeds that training"):
        check_heldout(cfg(heldout_seed=7919), cartpole)  # iteration 1's 4 seeds
    check_heldout(cfg(heldout_seed=7919, heldout_episodes=0), cartpole)  # nothing held out
    check_heldout(cfg(heldout_guidance=1.0), cartpole)
    with pytest.raises(ConfigError, match="heldout_guidance: Pendulum-v1's actions are gen"):
        check_heldout(cfg(env_id="Pendulum-v1", heldout_guidance=1.0),
                      make_adapter("Pendulum-v1", box_codec="numeric"))
    with pytest.raises(ConfigError, match="heldout_episodes: must be >= 0"):
        cfg(heldout_episodes=-1)


def test_heldout_report_section_by_hand():
    from policylm.jobs.grpo_episodes import GrpoEpisodesConfig, heldout_section
    from policylm.platform.config import config_from_dict
    from policylm.platform.evaluation.metrics import mean_se, paired_difference
    from policylm.platform.evaluation.reports import markdown_table

    start = {(s, 0): r for s, r in enumerate([400.0, 300.0, 500.0, 200.0])}
    trained = {(s, 0): r for s, r in enumerate([500.0, 500.0, 500.0, 400.0])}
    d = paired_difference(start, trained)  # differences 100, 200, 0, 200: mean 125
    assert d["mean"] == 125.0 and d["se"] == pytest.approx(np.std([100, 200, 0, 200], ddof=1) / 2)
    heldout = {"episodes": 4, "seed": 2_000_000, "guidance": 0.0, "difference": d,
               "policies": {"start": "hf://m?adapter=a", "trained": "hf://m?adapter=b"},
               "start": {"return": tr.return_stats(start.values()), "success_rate": 0.25,
                         "success_rate_se": 0.25},
               "trained": {"return": tr.return_stats(trained.values()), "success_rate": 0.75,
                           "success_rate_se": 0.25}}
    text = heldout_section(config_from_dict(GrpoEpisodesConfig, {}), heldout,
                           mean_se, markdown_table)
    assert "4 env seeds from base seed 2000000: the test range" in text and "Target 500" in text
    assert "| 350.0 ± 64.5 |" in text and "| 475.0 ± 25.0 |" in text  # by hand
    assert "over 4 seeds: 125.0 ± 47.9 (difference / s.e.: 2.6)" in text
    assert heldout_section(None, None, mean_se, markdown_table) == ""
