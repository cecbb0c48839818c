"""The policy service behind the HTTP API, without Ray: episode state and the adaptive target,
raw vs text observations, request errors, the FastAPI app's status codes (in-process client),
and the Serve config files against Ray's own schema."""

import numpy as np
import pytest

from policylm.platform.envs.spaces import SpaceValueError, from_json
from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig
from policylm.platform.serving import (
    ActRequest,
    ChatRequest,
    EpisodeStore,
    PolicyService,
    RequestError,
)

OBS = [[0.01, -0.2, 0.03, 0.25], [-0.04, 0.5, -0.02, -0.4]]


@pytest.fixture(scope="module")
def service(tiny_model_dir):
    return PolicyService(f"hf://{tiny_model_dir}?temperature=0&target_return=50&dtype=fp32")


def test_episode_store_adaptive_target_and_expiry():
    now = [100.0]
    store = EpisodeStore(ttl_s=10, clock=lambda: now[0])
    store.commit([("a", 0, 0.0, 20.0, 0.0, None), ("b", 0, 0.0, 500.0, 0.0, None)])
    store.reward("a", 1.5)
    store.reward("a", 2.0)
    (a,) = store.begin([("a", None, 0.0, 1)], 500.0)["rows"]
    assert (a["target"], a["earned"], a["t"]) == (20.0, 3.5, 1)
    now[0] = 105.0
    store.begin([("a", None, 0.0, 1)], 500.0)  # a is seen again at 105, b last at 100
    now[0] = 112.0
    assert store.expire() == ["b"] and set(store.episodes) == {"a"}
    with pytest.raises(RequestError, match="unknown or expired") as err:
        store.reward("b", 1.0)
    assert err.value.status == 404


def test_store_begin_and_commit_by_hand():
    """``begin`` gives each row the state its prompt needs and changes nothing; ``commit``
    moves the episode on; the step's seed comes from the episode id and the step (the same
    whichever replica asks)."""
    from policylm.platform.serving import episode_seed

    store = EpisodeStore()
    got = store.begin([("a", 30.0, 0.0, 0), ("b", None, 0.0, None), ("a", None, 2.0, None)],
                      500.0)
    rows = got["rows"]
    assert [(r["target"], r["earned"], r["t"]) for r in rows] == [(30.0, 0.0, 0),
                                                                   (500.0, 0.0, 0),
                                                                   (30.0, 2.0, 1)]
    assert rows[0]["seed"] == episode_seed("a", 0) != episode_seed("a", 1) == rows[2]["seed"]
    assert store.count() == 0 and got["expired"] == []  # nothing committed yet
    store.commit([("a", 0, 0.0, 30.0, 0.0, [30.0, 0, "o0", "right"]),
                  ("b", 0, 0.0, 500.0, 0.0, None),
                  ("a", 1, 2.0, 30.0, 2.0, [28.0, 1, "o1", "left"]),
                  ("a", 1, 2.0, 30.0, 2.0, [28.0, 1, "o1", "right"]),  # a repeat: no change
                  ("gone", 3, 1.0, 5.0, 1.0, None)],  # ended or expired: not recreated
                 history=2)
    assert store.reward("a", 1.0) == {"episode_id": "a", "step": 2, "target_return": 30.0,
                                      "earned": 3.0, "remaining_target": 27.0}
    assert store.end("b")["step"] == 1 and store.count() == 1
    assert store.episodes["a"].past == [[30.0, 0, "o0", "right"], [28.0, 1, "o1", "left"]]
    (nxt,) = store.begin([("a", None, 0.0, 2)], 500.0, history=2)["rows"]
    assert [p[1] for p in nxt["past"]] == [0, 1] and not nxt["repeat"]
    (again,) = store.begin([("a", None, 2.0, 1)], 500.0, history=2)["rows"]
    assert (again["t"], again["earned"], again["repeat"]) == (1, 2.0, True)
    assert [p[1] for p in again["past"]] == [0]  # the window step 1 was played with
    (skip,) = store.begin([("a", None, 0.0, 5)], 500.0)["rows"]
    assert skip["error"][0] == 409 and "at step 2" in skip["error"][1]
    (lost,) = store.begin([("zz", None, 0.0, 4)], 500.0)["rows"]
    assert lost["error"][0] == 404 and "new episode id" in lost["error"][1]


def test_limits_answer_413_and_422_naming_them(tiny_model_dir):
    from policylm.platform.serving import ServiceLimits

    svc = PolicyService(f"hf://{tiny_model_dir}?temperature=0&dtype=fp32",
                        limits=ServiceLimits(max_observations=3, max_prompt_tokens=100,
                                             max_new_tokens=8, max_rows_per_call=2))
    many, long, fine = svc.act([ActRequest(texts=["x=0"] * 4), ActRequest(texts=["w " * 60]),
                                ActRequest(texts=["x=0"] * 3)])
    assert isinstance(many, RequestError) and many.status == 413
    assert "max_observations" in str(many) and "4 observations" in str(many)
    assert isinstance(long, RequestError) and long.status == 422
    assert "max_prompt_tokens" in str(long)
    assert len(fine.actions) == 3  # three rows over two engine calls of at most two
    (tokens,) = svc.chat([ChatRequest(messages=[{"role": "user", "content": "hi"}],
                                      max_tokens=9)])
    assert isinstance(tokens, RequestError) and "max_new_tokens" in str(tokens)


def test_non_finite_numbers_and_unknown_roles_are_refused():
    from pydantic import ValidationError

    for bad in ({"observations": [[0.0, float("nan"), 0.0, 0.0]]},
                {"observations": [[0.0, 0.0, 0.0, 0.0]], "target_return": float("inf")},
                {"observations": [[0.0, 0.0, 0.0, 0.0]], "rewards": [float("-inf")]}):
        with pytest.raises(ValidationError, match="finite"):
            ActRequest(**bad)
    with pytest.raises(ValidationError, match=r"observations\[0\]\[1\]"):
        ActRequest(observations=[[0.0, float("nan")]])
    with pytest.raises(ValidationError, match=r"system.*user.*assistant"):
        ChatRequest(messages=[{"role": "tool", "content": "x"}])


def test_act_matches_the_in_process_policy(service, tiny_model_dir, cartpole):
    from policylm.platform.engines import get_engine

    policy = LLMPolicy(cartpole, get_engine(tiny_model_dir, "", "hf", "fp32"),
                       LLMPolicyConfig(target_return=50, temperature=0))
    for slot in (0, 1):
        policy.reset(slot, slot)
    want = policy.act([np.asarray(o, np.float32) for o in OBS], [0, 1])
    (raw,) = service.act([ActRequest(observations=OBS, steps=[0, 0])])
    texts = [cartpole.encode(np.asarray(o, np.float32)) for o in OBS]
    (text,) = service.act([ActRequest(texts=texts)])
    assert [a.action for a in raw.actions] == want == [a.action for a in text.actions]
    for a in raw.actions:
        assert set(a.scores) == {"left", "right"}
        assert a.text == ["left", "right"][a.action]
        assert a.text == max(a.scores, key=a.scores.get)  # temperature 0: the best score
        assert (a.target_return, a.step) == (50.0, 0)


def test_server_side_adaptive_target_across_calls(service):
    obs = OBS[:1]
    first = service.act([ActRequest(observations=obs, episode_ids=["ep"], target_return=20)])
    service.reward("ep", 1.0)
    second = service.act([ActRequest(observations=obs, episode_ids=["ep"])])
    third = service.act([ActRequest(observations=obs, episode_ids=["ep"], rewards=[2.5])])
    got = [(r.actions[0].target_return, r.actions[0].step) for r in (first[0], second[0],
                                                                     third[0])]
    assert got == [(20.0, 0), (19.0, 1), (16.5, 2)]  # 20 - 1, then 20 - 1 - 2.5
    ended = service.end("ep")
    assert (ended.earned, ended.remaining_target, ended.step) == (3.5, 16.5, 3)


def test_one_bad_request_does_not_fail_its_batch(service):
    good, bad = service.act([ActRequest(observations=OBS[:1]),
                             ActRequest(observations=[[0.1, 0.2, 0.3]])])
    assert len(good.actions) == 1
    assert isinstance(bad, RequestError)
    assert "requests[1].observations[0]" in str(bad) and "expected shape [4]" in str(bad)


def test_request_schema_names_what_is_wrong():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one of observations"):
        ActRequest(observations=OBS, texts=["x"])
    with pytest.raises(ValidationError, match="episode_ids has 1 entries for 2"):
        ActRequest(observations=OBS, episode_ids=["a"])
    with pytest.raises(ValidationError, match="target_return has 3 entries"):
        ActRequest(observations=OBS, target_return=[1, 2, 3])


def test_from_json_spaces():
    import gymnasium as gym

    space = gym.spaces.Dict({"pos": gym.spaces.Box(0, 1, (2,)), "k": gym.spaces.Discrete(3)})
    out = from_json(space, {"pos": [0.5, 0.25], "k": 2})
    assert out["k"] == 2 and out["pos"].dtype == np.float32
    assert out["pos"].tolist() == [0.5, 0.25]
    with pytest.raises(SpaceValueError, match=r"observation\.k: expected an integer"):
        from_json(space, {"pos": [0.5, 0.25], "k": "two"})
    with pytest.raises(SpaceValueError, match="expected an object with keys"):
        from_json(space, [0.5, 0.25])


def test_chat_completions_shape(service):
    req = ChatRequest(messages=[{"role": "user", "content": "Say left or right."}],
                      max_tokens=3, n=2, temperature=0)
    (out,) = service.chat([req])
    assert out["object"] == "chat.completion" and len(out["choices"]) == 2
    assert out["choices"][0]["message"]["content"] == out["choices"][1]["message"]["content"]
    assert out["usage"]["completion_tokens"] <= 6 and out["usage"]["prompt_tokens"] > 5


def test_api_status_codes_in_process(service):
    """401 without the key, 413 over the size limit, 422 naming the field, 404 for an unknown
    episode, and 500 with the reason when the engine fails, after which the app still answers."""
    from starlette.testclient import TestClient

    from policylm.serve.app import PolicyBackend, ServeConfig, make_api

    cfg = ServeConfig(api_key="s3cret", max_body_bytes=2048)
    client = TestClient(make_api(PolicyBackend(service), cfg))
    auth = {"Authorization": "Bearer s3cret"}
    assert client.get("/v1/health").status_code == 200  # open for probes
    assert client.post("/v1/act", json={"observations": OBS}).status_code == 401
    wrong = client.post("/v1/act", json={"observations": OBS},
                        headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert client.post("/v1/act", json={"observations": OBS}, headers=auth).status_code == 200
    big = client.post("/v1/act", json={"texts": ["x" * 3000]}, headers=auth)
    assert big.status_code == 413 and "max_body_bytes" in big.json()["detail"]
    missing = client.post("/v1/act", json={"target_return": 5}, headers=auth)
    assert missing.status_code == 422 and "exactly one of" in missing.text
    typed = client.post("/v1/act", json={"observations": OBS, "rewards": ["a", 1]},
                        headers=auth)
    assert typed.status_code == 422 and "rewards" in typed.text
    shape = client.post("/v1/act", json={"observations": [[1, 2]]}, headers=auth)
    assert shape.status_code == 422 and shape.json()["field"] == "requests[0].observations[0]"
    gone = client.post("/v1/episodes/nope/reward", json={"reward": 1}, headers=auth)
    assert gone.status_code == 404
    nan = client.post("/v1/act", content=b'{"observations": [[0, NaN, 0, 0]]}',
                      headers={**auth, "Content-Type": "application/json"})
    assert nan.status_code == 422 and "finite" in nan.text
    role = client.post("/v1/chat/completions", headers=auth,
                       json={"messages": [{"role": "robot", "content": "hi"}]})
    assert role.status_code == 422 and "role" in role.text
    assert client.get("/v1/policy", headers=auth).headers["x-policylm-replica"] == "local"

    engine = service.policy.engine
    real = engine.score
    engine.score = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory"))
    try:
        failed = client.post("/v1/act", json={"observations": OBS}, headers=auth)
    finally:
        engine.score = real
    assert failed.status_code == 500 and "RuntimeError: out of memory" in failed.json()["detail"]
    assert client.post("/v1/act", json={"observations": OBS}, headers=auth).status_code == 200


def test_serve_config_files_match_rays_schema():
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from policylm.platform.config import load_config
    from policylm.serve.app import ServeConfig

    root = Path(__file__).resolve().parents[2] / "configs"
    deploy = ServeDeploySchema.model_validate(yaml.safe_load((root / "serve_app.yaml")
                                                             .read_text()))
    (app,) = deploy.applications
    assert app.import_path == "policylm.serve.app:build_app"
    from policylm.platform.config import config_from_dict

    assert config_from_dict(ServeConfig, app.args).autoscaling["max_replicas"] == 2
    cfg = load_config(ServeConfig, root / "serve_cartpole.yaml")
    assert cfg.host == "127.0.0.1" and cfg.policy.startswith("hf://")


def test_served_history_equals_the_in_process_policy(tiny_model_dir, cartpole):
    """A history=2 policy served: two interleaved episodes, six steps each (the window moves at
    step 4), get the scores the in-process policy computes on the same observations, with the
    store keeping each episode's steps; a request without episode ids is refused by name."""
    from policylm.platform.engines import get_engine

    uri = f"hf://{tiny_model_dir}?temperature=0&target_return=20&dtype=fp32&history=2"
    svc = PolicyService(uri)
    policy = LLMPolicy(cartpole, get_engine(tiny_model_dir, "", "hf", "fp32", live="ref"),
                       LLMPolicyConfig(target_return=20, temperature=0, history=2))
    rng = np.random.default_rng(0)
    for slot in (0, 1):
        policy.reset(slot, slot)
    for t in range(6):
        obs = rng.normal(0, 0.1, (2, 4)).astype(np.float32)
        want = [policy.prompts([o], [s])[0] for o, s in zip(obs, (0, 1), strict=True)]
        scores = policy.engine.score(want, [["left", "right"]] * 2)
        policy.act(list(obs), [0, 1])
        policy.observe([0, 1], [1.0, 1.0])
        (got,) = svc.act([ActRequest(observations=obs.tolist(), episode_ids=["e0", "e1"],
                                     rewards=[1.0 if t else 0.0] * 2)])
        assert [a.step for a in got.actions] == [t, t]
        for a, want_scores in zip(got.actions, scores, strict=True):
            assert np.allclose([a.scores["left"], a.scores["right"]], want_scores, atol=1e-4)
        if t == 3:
            assert want[0].count("Target return") == 4  # steps 0-2 earlier, then step 3
    assert [len(p) for p in svc.store.episodes["e0"].past] == [4, 4, 4, 4]  # steps 2-5 kept
    (err,) = svc.act([ActRequest(observations=OBS[:1])])
    assert isinstance(err, RequestError) and err.field == "episode_ids"
    assert "history=2" in str(err)


def test_a_thinking_policy_serves_its_thoughts(tiny_model_dir, monkeypatch):
    """mode=think behind the service: each action comes with the thought written before it."""
    think = PolicyService(f"hf://{tiny_model_dir}?mode=think&think_tokens=8&dtype=fp32")
    monkeypatch.setattr(think.policy.engine, "generate", lambda prompts, *a, **k: [
        "Pole right.\nAction: right", "No idea"][:len(prompts)])
    (out,) = think.act([ActRequest(observations=OBS, steps=[0, 0])])
    assert [(a.text, a.thought, a.valid) for a in out.actions] == [
        ("right", "Pole right.", True), ("left", "No idea", False)]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_serve_stops_on_ctrl_c_and_sigterm(sig):
    """``policylm serve`` waits on this event: Ctrl-C and SIGTERM (``kill %1``) both set it (the
    whole command is stopped with SIGTERM in test_serve_cli)."""
    import os
    import signal

    from policylm.jobs.serve import stop_event

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = stop_event()
        assert not stop.is_set()
        os.kill(os.getpid(), getattr(signal, sig))
        assert stop.wait(5)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
