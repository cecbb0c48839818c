"""The LLM policy: template shared with the dataset builder, adaptive return, scoring choice,
generation fallback counting, URI errors."""

import numpy as np
import pytest

from policylm.platform.data import datasets as dsx
from policylm.platform.envs import make_adapter
from policylm.platform.policies import PolicyError, policy_from_uri
from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig
from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks


def test_training_rows_and_acting_prompts_are_the_same(cartpole, engine):
    """The dataset's chat messages rendered by the model's chat template equal the prompt the
    policy acts with, for the same observation, step and (remaining) target."""
    (chunk,) = plan_chunks([("w", "random:")], 1, 0, 1)
    steps = EpisodeRunner(cartpole, 1).run(chunk.specs, "r")
    rows = dsx.to_chat_rows(steps, cartpole.system_text()).to_pylist()
    obs = [np.asarray(o, np.float32) for o in steps.column("obs").to_pylist()]
    episode_return = steps.column("episode_return")[0].as_py()
    policy = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=episode_return))
    policy.reset(0, 0)
    for t, row in enumerate(rows[:5]):
        trained = engine.tokenizer.apply_chat_template(row[dsx.MESSAGES][:2], tokenize=False,
                                                       add_generation_prompt=True)
        assert policy.prompts([obs[t]], [0]) == [trained]
        policy.act([obs[t]], [0])
        policy.observe([0], [1.0])  # CartPole pays 1 per step: remaining target = rtg


def test_adaptive_and_fixed_targets(cartpole, engine):
    adaptive = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=100, adaptive=True))
    fixed = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=100, adaptive=False))
    obs = [np.zeros(4, np.float32)] * 2
    for p in (adaptive, fixed):
        p.reset(0, 1)
        p.reset(1, 2)
        for _ in range(3):
            p.act(obs, [0, 1])
            p.observe([0, 1], [1.0, 2.5])
    assert (adaptive.target(0), adaptive.target(1)) == (97.0, 92.5)  # 100-3*1, 100-3*2.5
    assert (fixed.target(0), fixed.target(1)) == (100.0, 100.0)
    assert "Target return: 92.5\nStep: 3\n" in adaptive.prompts(obs, [0, 1])[1]
    adaptive.reset(1, 3)
    assert adaptive.target(1) == 100.0


def test_score_mode_follows_the_scores(cartpole, engine):
    greedy = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=50, temperature=0))
    obs = [np.array([0.1, 0.0, 0.02, -0.1], np.float32)]
    greedy.reset(0, 0)
    logp = engine.score(greedy.prompts(obs, [0]), [["left", "right"]], prefix=greedy.prefix)[0]
    assert greedy.act(obs, [0]) == [int(np.argmax(logp))]
    sampled = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=50, temperature=1.0))
    picks = []
    for seed in range(200):
        sampled.reset(0, seed)
        picks += sampled.act(obs, [0])
    p_right = float(np.exp(logp[1]) / np.exp(logp).sum())
    assert abs(np.mean(picks) - p_right) < 0.1  # sampling follows softmax(logp)


def test_generation_fallback_is_counted(cartpole, engine):
    policy = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=50, mode="generate",
                                                         max_new_tokens=3))
    obs = [np.zeros(4, np.float32)] * 4
    for s in range(4):
        policy.reset(s, s)
    texts = engine.generate(policy.prompts(obs, range(4)), 3)
    invalid = 0
    for text in texts:
        try:
            cartpole.codec.parse(text)
        except ValueError:
            invalid += 1
    actions = policy.act(obs, range(4))
    assert policy.stats()["invalid"] == invalid and policy.stats()["actions"] == 4
    assert all(a in (0, 1) for a in actions)
    assert policy.stats()["invalid_rate"] == invalid / 4


def test_hf_uri_parameters_and_errors(cartpole, tiny_model_dir):
    p = policy_from_uri(f"hf://{tiny_model_dir}?target_return=42&adaptive=0&temperature=0.5"
                        "&dtype=fp32", cartpole)
    assert (p.cfg.target_return, p.cfg.adaptive, p.cfg.temperature) == (42.0, False, 0.5)
    with pytest.raises(PolicyError, match="unknown hf:// parameters"):
        policy_from_uri(f"hf://{tiny_model_dir}?targt=3", cartpole)
    with pytest.raises(PolicyError, match="use mode=generate"):
        policy_from_uri(f"hf://{tiny_model_dir}?dtype=fp32",
                        make_adapter("Pendulum-v1", box_codec="numeric"))
    with pytest.raises(PolicyError, match="model directory /no/such/model does not exist"):
        policy_from_uri("hf:///no/such/model", cartpole)


def test_a_driver_checks_hf_uris_without_loading_weights(cartpole, tiny_model_dir, monkeypatch,
                                                        tmp_path):
    """check_uri parses an hf:// URI into its spec and checks it for the env with no engine
    built; every bad setting is named, as building the policy would name it."""
    import policylm.platform.engines as engines
    from policylm.platform.policies import check_uri
    from policylm.platform.policies.llm import parse_llm_spec

    def no_engine(*args, **kwargs):
        raise AssertionError("check_uri loaded a model")

    monkeypatch.setattr(engines, "get_engine", no_engine)
    uri = f"hf://{tiny_model_dir}?target_return=42.5&temperature=0.5&dtype=fp32"
    check_uri(uri, cartpole)
    check_uri(f"mix:{uri}&eps=0.3", cartpole)
    spec = parse_llm_spec(tiny_model_dir, {"target_return": "42.5", "history": "2"})
    assert (spec.cfg.target_return, spec.cfg.history, spec.engine, spec.dtype) == \
        (42.5, 2, "hf", "auto")
    pendulum = make_adapter("Pendulum-v1", box_codec="numeric")
    check_uri(f"hf://{tiny_model_dir}?mode=generate", pendulum)
    for query, adapter, says in [
            ("temperature=warm", cartpole, "temperature='warm' is not a number"),
            ("history=1.5", cartpole, "history='1.5' is not an integer"),
            ("temperature=-1", cartpole, "temperature must be >= 0"),
            (f"adapter={tmp_path / 'none'}", cartpole, "adapter=.*none does not exist"),
            ("shots=2", cartpole, "shots=2 needs shots_from"),
            ("engine=tgi", cartpole, "engine 'tgi' is unknown"),
            ("dtype=fp8", cartpole, "dtype 'fp8' is unknown"),
            ("mode=think&prompt=compact", cartpole, "mode=think .* needs prompt=chat"),
            ("dtype=fp32", pendulum, "actions cannot be listed; use mode=generate")]:
        with pytest.raises(PolicyError, match=says):
            check_uri(f"hf://{tiny_model_dir}?{query}", adapter)
    with pytest.raises(PolicyError, match=r"eps must be in \[0, 1\]"):
        check_uri(f"mix:{uri}&eps=2", cartpole)
    with pytest.raises(PolicyError, match="unknown hf:// parameters"):
        check_uri(f"mix:hf://{tiny_model_dir}?targt=3&eps=0.1", cartpole)


def test_llm_policy_plays_episodes_in_the_runner(cartpole, tiny_model_dir):
    runner = EpisodeRunner(cartpole, 3)
    uri = f"hf://{tiny_model_dir}?target_return=30&dtype=fp32"
    (chunk,) = plan_chunks([("llm", uri)], 3, 0, 3)
    table = runner.run(chunk.specs, "r")
    assert table.num_rows == runner.policy_stats()[uri]["actions"]
    again = EpisodeRunner(cartpole, 1).run(chunk.specs, "r")  # seeded per episode
    assert again.column("action").to_pylist() == table.column("action").to_pylist()


def test_mean_norm_chooses_by_log_likelihood_per_token(engine):
    crafter = make_adapter("Crafter", length=10)  # action names of 1 to 6 tokens
    env = crafter.make_env()
    obs = [env.reset(seed=0)[0]]
    env.close()
    cfg = dict(target_return=5, temperature=0, prompt_form="compact")
    summed = LLMPolicy(crafter, engine, LLMPolicyConfig(**cfg))
    mean = LLMPolicy(crafter, engine, LLMPolicyConfig(**cfg, norm="mean"))
    for p in (summed, mean):
        p.reset(0, 0)
    logp = engine.score(summed.prompts(obs, [0]), [summed.candidates], prefix=summed.prefix)[0]
    tokens = np.array([len(engine.encode(c)) + 1 for c in summed.candidates])  # + end of turn
    assert tokens.min() == 2 and tokens.max() > 3
    assert summed.act(obs, [0]) == [int(np.argmax(logp))]
    assert mean.act(obs, [0]) == [int(np.argmax(logp / tokens))]
    pmi = LLMPolicy(crafter, engine, LLMPolicyConfig(**cfg, norm="pmi"))
    pmi.reset(0, 0)
    empty = engine.score(["R=0 t=0  ->"], [summed.candidates])[0]  # the compact prompt, no obs
    assert np.allclose(pmi.baseline, empty)
    assert pmi.act(obs, [0]) == [int(np.argmax(logp - empty))]
    with pytest.raises(ValueError, match="norm must be sum, mean or pmi"):
        LLMPolicy(crafter, engine, LLMPolicyConfig(norm="max"))


def test_return_guidance_by_hand(cartpole, engine):
    """guidance=w acts on logp(a | R, s) + w * (logp(a | R, s) - logp(a | ?, s)): the scores of
    the prompt with the target and of the same prompt with the null target, from one engine
    call; computed here by hand from the engine's scores. The reported scores stay the
    target-conditioned ones."""
    from policylm.platform.policies.llm import guide
    from policylm.platform.prompts import render_prompt

    assert np.allclose(guide(np.array([-1.0, -2.0]), np.array([-1.5, -1.0]), 2.0),
                       [-1.0 + 2 * 0.5, -2.0 + 2 * -1.0])
    rng = np.random.default_rng(0)
    obs = [rng.normal(0, 0.3, 4).astype(np.float32) for _ in range(8)]
    texts = [cartpole.encode(o) for o in obs]
    policy = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=300, temperature=0,
                                                          prompt_form="compact", guidance=3.0))
    calls = []
    score = engine.score

    def spy(prompts, cands, **kw):
        calls.append(list(prompts))
        return score(prompts, cands, **kw)

    engine.score = spy
    try:
        decisions = policy.decide(texts, [300] * 8, [2] * 8, [rng] * 8)
    finally:
        del engine.score
    (sent,) = calls  # one call: 8 prompts with the target, then the same 8 with "?"
    assert sent[:8] == [render_prompt(None, "compact", "", 300, 2, t) for t in texts]
    assert sent[8:] == [f"R=? t=2 {t} ->" for t in texts]
    cond = score(sent[:8], [policy.candidates] * 8)  # " left", " right"
    null = score(sent[8:], [policy.candidates] * 8)
    for d, c, u in zip(decisions, cond, null, strict=True):
        assert d.text == ["left", "right"][int(np.argmax(c + 3.0 * (c - u)))]
        assert np.allclose(d.scores, c, atol=1e-5)
    plain = LLMPolicy(cartpole, engine, LLMPolicyConfig(target_return=300, temperature=0,
                                                         prompt_form="compact"))
    unguided = [d.text for d in plain.decide(texts, [300] * 8, [2] * 8, [rng] * 8)]
    want = [["left", "right"][int(np.argmax(c))] for c in cond]
    assert unguided == want  # w = 0 is the plain policy
    assert np.abs(np.array(cond) - np.array(null)).max() > 1e-3  # "?" moves the scores
    with pytest.raises(ValueError, match="guidance needs mode=score"):
        LLMPolicy(cartpole, engine, LLMPolicyConfig(mode="generate", guidance=1.0))


def test_few_shot_examples_from_the_best_episodes(cartpole, engine, tmp_path):
    """shots=3 draws three steps of the best quarter of the episodes (by return), seeded, and
    puts them where every prompt shares them: after the system text (chat) or before the first
    step (compact), which is the engine's cached prefix."""
    from policylm.platform.policies.shots import pick_shots, render_shots
    from policylm.platform.rollout.runner import write_chunk

    (chunk,) = plan_chunks([("w", "random:")], 8, 0, 8)
    steps = EpisodeRunner(cartpole, 4).run(chunk.specs, "r")
    write_chunk(steps, tmp_path / "trajectories", chunk)
    returns = {e: r for e, r in zip(steps.column("episode_id").to_pylist(),
                                    steps.column("episode_return").to_pylist(), strict=True)}
    second = sorted(returns.values(), reverse=True)[1]  # the best ceil(25% of 8) = 2 episodes
    shots = pick_shots(str(tmp_path), 3, seed=1)
    assert len(shots) == 3 and all(returns[s.episode_id] >= second for s in shots)
    assert len({s.episode_id for s in shots}) <= 2
    assert shots == pick_shots(str(tmp_path), 3, seed=1) != pick_shots(str(tmp_path), 3, seed=2)
    assert shots == sorted(shots, key=lambda s: (s.episode_id, s.t))
    block = render_shots(shots)
    assert block.splitlines()[1:] == [f"{s.observation} -> {s.action}" for s in shots]
    uri = f"hf://{engine.model_name}?dtype=fp32&shots=3&shots_from={tmp_path}&shots_seed=1"
    chat = policy_from_uri(uri, cartpole)
    compact = policy_from_uri(uri + "&prompt=compact", cartpole)
    obs = np.zeros(4, np.float32)
    for policy in (chat, compact):
        policy.reset(0, 0)
        (prompt,) = policy.prompts([obs], [0])
        assert prompt.startswith(policy.prefix) and block in policy.prefix
        policy.act([obs], [0])
    assert compact.prompts([obs], [0])[0] == f"{block}\nR=0 t=1 {cartpole.encode(obs)} ->"
    with pytest.raises(ValueError, match="shots_from"):
        policy_from_uri(f"hf://{engine.model_name}?dtype=fp32&shots=2", cartpole)
    # evaluate shots=k: the policy's prompts hold them, and metrics.json lists them
    from policylm.jobs.evaluate import EvaluateConfig, main

    ev = main(EvaluateConfig(policy=f"hf://{engine.model_name}?dtype=fp32&shots_seed=1",
                             targets=[20], episodes=1, shots=3, shots_from=str(tmp_path),
                             num_workers=0, envs_per_worker=1, out=str(tmp_path / "ev")))
    assert ev["shots"] == [vars(s) for s in shots] and ev["targets"]["target_20"]["count"] == 1
    with pytest.raises(PolicyError, match="not a trajectory or run directory"):
        pick_shots(str(tmp_path / "nothing"), 2)


def test_a_long_history_drops_its_oldest_steps_to_fit_the_context(cartpole, tiny_model_dir):
    """With a context too small for the whole window, the prompt keeps the newest earlier steps
    that fit (the engine would otherwise cut into the newest ones) and still ends with the
    current observation."""
    from policylm.platform.engines import get_engine

    engine = get_engine(tiny_model_dir, "", "hf", "fp32", live="small-context")
    policy = LLMPolicy(cartpole, engine, LLMPolicyConfig(prompt_form="compact", history=8,
                                                          temperature=0))
    obs = [np.full(4, 0.01 * k, np.float32) for k in range(8)]
    policy.reset(0, 0)
    for o in obs[:7]:
        policy.act([o], [0])
    (whole,) = policy.prompts([obs[7]], [0])
    assert whole.count(" ->") == 8  # seven earlier steps and this one
    before, engine.max_length = engine.max_length, len(engine.encode(whole)) - 10  # too small
    try:
        kept = policy._fitting(cartpole.encode(obs[7]), policy.target(0), 7, policy.window(0))
        assert 0 < len(kept) < 7 and kept == policy.window(0)[-len(kept):]  # the newest ones
        (decision,) = policy.decide([cartpole.encode(obs[7])], [policy.target(0)], [7],
                                    [policy.rngs[0]], [policy.window(0)])
        assert decision.valid and engine.truncated == 0  # nothing cut by the engine
    finally:
        engine.max_length = before


@pytest.mark.parametrize("form", ["chat", "compact"])
def test_few_shot_rows_and_acting_prompts_are_the_same(cartpole, engine, tmp_path, form):
    """SFT rows rendered with the examples (sft shots=k) equal the prompts of a policy drawing
    the same examples, step by step; a model or adapter recorded with the examples prompts with
    them without being told."""
    import shutil

    import pyarrow.compute as pc

    from policylm.platform.policies.shots import pick_shots, render_shots
    from policylm.platform.records import PromptRecord, write_record
    from policylm.platform.rollout.runner import write_chunk
    from policylm.platform.training.sft import to_prompt_completion

    (chunk,) = plan_chunks([("w", "random:")], 4, 0, 4)
    steps = EpisodeRunner(cartpole, 4).run(chunk.specs, "r")
    write_chunk(steps, tmp_path / "trajectories", chunk)
    lead = render_shots(pick_shots(str(tmp_path), 2, seed=3))
    first = steps.filter(pc.equal(steps.column("episode_id"), steps.column("episode_id")[0]))
    rows = dsx.to_chat_rows(first, cartpole.system_text())
    pairs = to_prompt_completion(rows, form, lead=lead).to_pylist()
    obs = [np.asarray(o, np.float32) for o in first.column("obs").to_pylist()]
    ret = first.column("episode_return")[0].as_py()
    uri = (f"hf://{engine.model_name}?dtype=fp32&prompt={form}&target_return={ret}"
           f"&shots=2&shots_from={tmp_path}&shots_seed=3")
    model = tmp_path / "model"  # the model directory recorded with the examples, as sft does
    shutil.copytree(engine.model_name, model)
    write_record(model, PromptRecord(form, 0, lead))
    for policy in (policy_from_uri(uri, cartpole),
                   policy_from_uri(f"hf://{model}?dtype=fp32&target_return={ret}", cartpole)):
        assert policy.lead == lead
        policy.reset(0, 0)
        for t, pair in enumerate(pairs[:4]):
            trained = engine.template.render(pair["prompt"]) if form == "chat" else pair["prompt"]
            assert policy.prompts([obs[t]], [0]) == [trained]
            assert lead in trained
            policy.act([obs[t]], [0])
            policy.observe([0], [1.0])


def test_every_episode_of_a_slot_starts_at_the_configured_target(cartpole, tiny_model_dir):
    """One slot, three episodes: each starts from the target itself, not the target minus the
    previous episode's last reward (CartPole pays 1 on every step, the last one too), and the
    trajectories record the remaining target of every step."""
    from policylm.platform.data import trajectories as tr

    adapter = make_adapter("CartPole-v1", max_episode_steps=5)
    uri = f"hf://{tiny_model_dir}?target_return=10&dtype=fp32"
    (chunk,) = plan_chunks([("llm", uri)], 3, 0, 3)
    table = EpisodeRunner(adapter, 1).run(chunk.specs, "r")
    rows = table.select([tr.EPISODE_ID, tr.T, tr.TARGET_RETURN]).to_pylist()
    assert len({r[tr.EPISODE_ID] for r in rows}) == 3
    assert [r[tr.TARGET_RETURN] for r in rows if r[tr.T] == 0] == [10.0] * 3
    # adaptive: 10 minus the reward earned before the step, 1 per CartPole step
    assert all(r[tr.TARGET_RETURN] == 10.0 - r[tr.T] for r in rows)


def test_policies_without_a_target_record_none(cartpole):
    from policylm.platform.data import trajectories as tr

    (chunk,) = plan_chunks([("random", "random:")], 2, 0, 2)
    table = EpisodeRunner(cartpole, 1).run(chunk.specs, "r")
    assert table.column(tr.TARGET_RETURN).null_count == table.num_rows
