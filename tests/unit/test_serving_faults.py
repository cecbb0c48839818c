"""The policy service off the happy path, without Ray: a retried step counts its reward once,
a lost or expired episode is an error (never a silent restart), a timed-out request stops its
engine work, prompt limits count the whole prompt, ended episodes free their KV sessions (and
the session cache keeps to its byte budget), and the tokenizer is never used by two threads."""

import threading
import time

import numpy as np
import pytest
from ports import free_ports

from policylm.platform.serving import (
    ActRequest,
    ChatRequest,
    EpisodeStore,
    PolicyService,
    RequestError,
    ServiceLimits,
)

OBS = [[0.01, -0.2, 0.03, 0.25], [-0.04, 0.5, -0.02, -0.4]]


def uri(model_dir: str, **extra) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"temperature": 0, "target_return": 50,
                                             "dtype": "fp32", **extra}.items())
    return f"hf://{model_dir}?{query}"


def step(svc, episode, t, reward=0.0, **kw):
    """One act call of one observation for ``episode`` at step ``t``: its answer or error."""
    (out,) = svc.act([ActRequest(observations=OBS[:1], episode_ids=[episode], rewards=[reward],
                                 steps=[t], **kw)])
    return out


def fail_once(monkeypatch, engine):
    """The engine's next score call raises "out of memory"; later calls are the real ones."""
    real, calls = engine.score, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "score", flaky)
    return calls


# --- item 5: the episode moves on only with its answer; a retry is idempotent -------------

def test_a_failed_step_retried_counts_its_reward_once(tiny_model_dir, monkeypatch):
    """Step 1 (reward 1) fails in the engine and is sent again: the retry is step 1 with target
    20 - 1, and step 2 (reward 2) is 20 - 3; the episode earned 3 over 3 steps."""
    svc = PolicyService(uri(tiny_model_dir))
    first = step(svc, "retry", 0, target_return=20)
    assert (first.actions[0].step, first.actions[0].target_return) == (0, 20.0)
    fail_once(monkeypatch, svc.policy.engine)
    with pytest.raises(RuntimeError, match="out of memory"):
        step(svc, "retry", 1, reward=1.0)
    again = step(svc, "retry", 1, reward=1.0)
    assert (again.actions[0].step, again.actions[0].target_return) == (1, 19.0)
    nxt = step(svc, "retry", 2, reward=2.0)
    assert (nxt.actions[0].step, nxt.actions[0].target_return) == (2, 17.0)
    ended = svc.end("retry")
    assert (ended.step, ended.earned) == (3, 3.0)


def test_a_retry_of_an_answered_step_repeats_its_answer(tiny_model_dir):
    """The answer of step 1 was lost on the way back (the step was committed): sending step 1
    again gets the same action, target and scores, and the reward still counts once; a step
    that skips ahead or goes further back gets 409 saying which step the episode is at."""
    svc = PolicyService(uri(tiny_model_dir))
    step(svc, "lost", 0, target_return=30)
    one = step(svc, "lost", 1, reward=2.0)
    again = step(svc, "lost", 1, reward=2.0)
    assert again.actions[0].model_dump() == one.actions[0].model_dump()
    assert svc.reward("lost", 0.0).earned == 2.0 and svc.reward("lost", 0.0).step == 2
    for bad in (0, 3):
        err = step(svc, "lost", bad, reward=0.0)
        assert isinstance(err, RequestError) and err.status == 409
        assert "at step 2" in str(err) and f"step {bad}" in str(err)
    changed = step(svc, "lost", 1, reward=5.0)  # not the same call: its reward differs
    assert isinstance(changed, RequestError) and changed.status == 409
    assert step(svc, "lost", 2, reward=1.0).actions[0].target_return == 27.0


def test_retry_over_the_app_after_a_500(tiny_model_dir, monkeypatch):
    """The same through the HTTP app (in-process client): 500, then the retry answers step 1."""
    from starlette.testclient import TestClient

    from policylm.serve.app import PolicyBackend, ServeConfig, make_api

    svc = PolicyService(uri(tiny_model_dir))
    client = TestClient(make_api(PolicyBackend(svc), ServeConfig()))
    body = {"observations": OBS[:1], "episode_ids": ["http"], "steps": [0],
            "target_return": 10}
    assert client.post("/v1/act", json=body).status_code == 200
    fail_once(monkeypatch, svc.policy.engine)
    body = {"observations": OBS[:1], "episode_ids": ["http"], "steps": [1], "rewards": [1.0]}
    assert client.post("/v1/act", json=body).status_code == 500
    ok = client.post("/v1/act", json=body)
    assert ok.status_code == 200
    assert (ok.json()["actions"][0]["step"], ok.json()["actions"][0]["target_return"]) == (1, 9)
    ended = client.delete("/v1/episodes/http").json()
    assert (ended["step"], ended["earned"]) == (2, 1.0)


# --- item 6: a lost or expired episode is an error ----------------------------------------

def test_an_expired_episode_is_an_error_not_a_restart(tiny_model_dir):
    now = [0.0]
    store = EpisodeStore(ttl_s=10, clock=lambda: now[0])
    svc = PolicyService(uri(tiny_model_dir), store=store)
    step(svc, "old", 0, target_return=20)
    step(svc, "old", 1, reward=1.0)
    now[0] = 11.5  # idle past the TTL
    err = step(svc, "old", 2, reward=1.0)
    assert isinstance(err, RequestError) and err.status == 404
    assert "unknown or expired" in str(err) and "new episode id" in str(err)
    assert err.field == "requests[0].episode_ids[0]"
    assert store.count() == 0  # not recreated at step 0 with the default target
    fresh = step(svc, "new", 0, target_return=20)  # a new id at step 0 starts as asked
    assert (fresh.actions[0].step, fresh.actions[0].target_return) == (0, 20.0)


def test_one_lost_episode_fails_only_its_request(tiny_model_dir):
    svc = PolicyService(uri(tiny_model_dir))
    good, lost = svc.act([
        ActRequest(observations=OBS[:1], episode_ids=["known"], steps=[0]),
        ActRequest(observations=OBS, episode_ids=["a-new", "never-seen"], steps=[0, 4])])
    assert good.actions[0].step == 0
    assert isinstance(lost, RequestError) and lost.status == 404
    assert lost.field == "requests[1].episode_ids[1]"
    assert svc.store.count() == 1  # the failed request started nothing either


@pytest.fixture
def http_server():
    """``serve(service) -> base URL``: the HTTP app over ``service`` on a loopback port (uvicorn
    in a thread), stopped after the test."""
    import uvicorn

    from policylm.serve.app import PolicyBackend, ServeConfig, make_api

    servers = []

    def serve(service) -> str:
        (port,) = free_ports(1)
        server = uvicorn.Server(uvicorn.Config(make_api(PolicyBackend(service), ServeConfig()),
                                               host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        while not server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield serve
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def test_the_http_policy_retries_a_step_and_names_a_lost_episode(tiny_model_dir, cartpole,
                                                                  monkeypatch, http_server):
    """The ``http://`` policy over a real HTTP server: a 500 is retried as the same step (the
    reward counts once), and an episode the server lost is a RemoteError saying so."""
    from policylm.platform.policies import policy_from_uri
    from policylm.platform.policies.remote import RemoteError

    now = [0.0]
    svc = PolicyService(uri(tiny_model_dir), store=EpisodeStore(ttl_s=10, clock=lambda: now[0]))
    policy = policy_from_uri(f"{http_server(svc)}?target_return=20&wait=5", cartpole)
    obs = [np.asarray(OBS[0], np.float32)]
    policy.reset(0, 7)
    policy.act(obs, [0])
    policy.observe([0], [1.0])
    calls = fail_once(monkeypatch, svc.policy.engine)
    policy.act(obs, [0])
    assert len(calls) == 2 and policy.targets == [19.0]  # retried once, as step 1
    policy.observe([0], [1.0])
    policy.act(obs, [0])
    (state,) = svc.store.episodes.values()
    assert (state.t, state.earned) == (3, 2.0)
    now[0] = 30.0  # the episode idles past the TTL
    with pytest.raises(RemoteError, match=r"HTTP 404.*no longer knows an episode") as err:
        policy.act(obs, [0])
    assert err.value.status == 404 and svc.store.count() == 0


def test_every_episode_through_the_http_policy_starts_at_its_target(tiny_model_dir,
                                                                    http_server):
    """One slot, three CartPole episodes through the ``http://`` policy and the server's
    episode store: each episode's first step is played at the target itself (the previous
    episode's last reward is not sent as the new episode's first), and the recorded target of
    every step is the target less the reward earned before it (1 a step)."""
    from policylm.platform.data import trajectories as tr
    from policylm.platform.envs import make_adapter
    from policylm.platform.rollout.runner import EpisodeRunner, plan_chunks

    svc = PolicyService(uri(tiny_model_dir), env_id="CartPole-v1")
    base = http_server(svc)
    adapter = make_adapter("CartPole-v1", max_episode_steps=4)
    (chunk,) = plan_chunks([("http", f"{base}?target_return=10&wait=5")], 3, 0, 3)
    rows = EpisodeRunner(adapter, 1).run(chunk.specs, "r").select(
        [tr.EPISODE_ID, tr.T, tr.TARGET_RETURN]).to_pylist()
    assert len({r[tr.EPISODE_ID] for r in rows}) == 3
    assert [r[tr.TARGET_RETURN] for r in rows if r[tr.T] == 0] == [10.0] * 3
    assert all(r[tr.TARGET_RETURN] == 10.0 - r[tr.T] for r in rows)
    # the policy ended each episode when its slot started the next: the server holds the last
    assert svc.store.count() == 1


# --- item 7: a request past its deadline stops its engine work ----------------------------

def slow_engine(monkeypatch, engine, seconds):
    real, calls = engine.score, []

    def slow(*args, **kwargs):
        calls.append(time.monotonic())
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "score", slow)
    return calls


def test_a_deadline_stops_the_work_between_engine_calls(tiny_model_dir, monkeypatch):
    """40 rows in calls of one row at 0.2 s a call, with a 0.5 s deadline: 504 within about one
    call after the deadline (not after 40 calls), no episode moved on, and the next request is
    served."""
    svc = PolicyService(uri(tiny_model_dir), limits=ServiceLimits(max_rows_per_call=1))
    calls = slow_engine(monkeypatch, svc.policy.engine, 0.2)
    t0 = time.monotonic()
    (err,) = svc.act([ActRequest(texts=["x=0"] * 39 + ["x=1"], episode_ids=[
        f"d{k}" for k in range(40)], steps=[0] * 40)], deadlines=[t0 + 0.5])
    took = time.monotonic() - t0
    assert isinstance(err, RequestError) and err.status == 504
    assert "request_timeout_s" in str(err) and "retry" in str(err)
    assert took < 0.5 + 0.2 + 1.0 and len(calls) <= 4  # not 40 calls, 8 s
    assert svc.store.count() == 0  # nothing committed: a retry is the same step
    (small,) = svc.act([ActRequest(texts=["x=0"])], deadlines=[time.monotonic() + 5])
    assert len(small.actions) == 1


def test_a_504_over_the_app_frees_the_replica(tiny_model_dir, monkeypatch):
    """Over the HTTP app: a request past ``request_timeout_s`` gets 504; the replica stops
    computing it (no engine call after), and a small request right after is answered in about
    one engine call."""
    from starlette.testclient import TestClient

    from policylm.serve.app import PolicyBackend, ServeConfig, make_api

    svc = PolicyService(uri(tiny_model_dir), limits=ServiceLimits(max_rows_per_call=1))
    calls = slow_engine(monkeypatch, svc.policy.engine, 0.2)
    client = TestClient(make_api(PolicyBackend(svc), ServeConfig(request_timeout_s=0.6)))
    big = client.post("/v1/act", json={"texts": ["x=0"] * 40})
    assert big.status_code == 504 and "request_timeout_s" in big.json()["detail"]
    t0 = time.monotonic()
    small = client.post("/v1/act", json={"texts": ["x=0"]})
    assert small.status_code == 200 and time.monotonic() - t0 < 0.2 * 2 + 1.5  # shared CPUs
    time.sleep(0.5)
    settled = len(calls)
    time.sleep(0.6)
    assert len(calls) == settled <= 0.6 / 0.2 + 3  # the timed-out request makes no more calls


# --- item 8: the prompt limit counts the whole prompt -------------------------------------

def test_max_prompt_tokens_counts_the_rendered_prompt(tiny_model_dir):
    """The observation alone (about 23 tokens) fits a limit of 40; the prompt with the system
    text does not: 422, saying what the count holds."""
    svc = PolicyService(uri(tiny_model_dir), limits=ServiceLimits(max_prompt_tokens=40))
    obs_tokens = len(svc.policy.engine.encode(svc.adapter.encode(
        np.asarray(OBS[0], np.float32))))
    assert obs_tokens <= 40
    (err,) = svc.act([ActRequest(observations=OBS[:1])])
    assert isinstance(err, RequestError) and err.status == 422
    assert "max_prompt_tokens" in str(err) and "system text" in str(err)
    assert "history" in str(err) and err.field == "requests[0].observations[0]"
    roomy = PolicyService(uri(tiny_model_dir), limits=ServiceLimits(max_prompt_tokens=200))
    assert len(roomy.act([ActRequest(observations=OBS[:1])])[0].actions) == 1


def test_a_growing_history_window_is_trimmed_to_max_prompt_tokens(tiny_model_dir):
    """A history policy whose window would outgrow the limit mid-episode loses its oldest
    steps instead: every step is answered, every rendered prompt keeps within the limit."""
    limit = 160
    svc = PolicyService(uri(tiny_model_dir, history=8),
                        limits=ServiceLimits(max_prompt_tokens=limit))
    engine, sizes = svc.policy.engine, []
    real = engine.score

    def measured(prompts, *args, **kwargs):
        sizes.extend(len(engine.encode(p)) for p in prompts)
        return real(prompts, *args, **kwargs)

    svc.policy.engine.score = measured
    for t in range(12):
        out = step(svc, "long", t, reward=1.0 if t else 0.0)
        assert not isinstance(out, RequestError), out
    assert len(sizes) == 12 and max(sizes) <= limit
    # the window was cut: with 8 to 15 earlier steps the prompt would be longer
    assert len(svc.store.episodes["long"].past) > 0


# --- item 9: KV sessions end with their episodes, and keep to a byte budget ---------------

def transcript(engine, k: int, steps: int) -> list[str]:
    """Episode ``k``'s prompts, each extending the one before (a history transcript)."""
    msgs, out = [{"role": "system", "content": "CartPole. Valid actions: left, right."}], []
    for t in range(steps):
        msgs = [*msgs, {"role": "user", "content": f"Target return: {9 - t}\nStep: {t}\n"
                                                   f"x=0.{k}{t} v=-0.{t} a=0.0{k}"}]
        out.append(engine.template.render(msgs))
        msgs = [*msgs, {"role": "assistant", "content": ["left", "right"][(t + k) % 2]}]
    return out


@pytest.mark.parametrize("cands", [["left", "right"], ["pickup", "toggle"]])
def test_session_cache_keeps_to_its_byte_budget(tiny_model_dir, cands):
    """Three interleaved episodes of six steps with a budget of about one and a half long
    sessions: after every call the cached tensors hold at most the budget, the least recently
    used session goes first, and every score equals the uncached one."""
    from policylm.platform.engines.hf import HFEngine

    probe = HFEngine(tiny_model_dir, dtype="fp32")
    episodes = [transcript(probe, k, 6) for k in range(3)]
    probe.score(episodes[0][-1:], [cands], sessions=["probe"])
    budget = int(1.5 * probe.session_bytes())
    engine = HFEngine(tiny_model_dir, dtype="fp32", max_session_bytes=budget)
    evicted = False
    for t in range(6):
        for k in range(3):
            got = engine.score([episodes[k][t]], [cands], sessions=[f"e{k}"])
            want = probe.score([episodes[k][t]], [cands])
            assert np.allclose(got, want, atol=1e-4)
            assert 0 < engine.session_bytes() <= budget
            evicted |= len(engine._sessions) < 3
        if t == 0:
            assert set(engine._sessions) == {"e0", "e1", "e2"}  # short prompts all fit
    assert evicted and list(engine._sessions)[-1] == "e2"  # the most recent stays
    engine.drop_session("e2")
    assert "e2" not in engine._sessions
    assert engine.session_bytes() <= budget


def test_ended_episodes_drop_their_sessions(tiny_model_dir, cartpole):
    """A served history policy: DELETE, TTL expiry and (in process) a slot's reset drop the
    episode's engine session; other episodes keep theirs."""
    from policylm.platform.engines import get_engine
    from policylm.platform.policies.llm import LLMPolicy, LLMPolicyConfig

    now = [0.0]
    svc = PolicyService(uri(tiny_model_dir, history=2),
                        store=EpisodeStore(ttl_s=10, clock=lambda: now[0]))
    sessions = svc.policy.engine._sessions
    for t in range(2):
        svc.act([ActRequest(observations=OBS, episode_ids=["s0", "s1"], steps=[t, t])])
    assert {"s0", "s1"} <= set(sessions)
    svc.end("s0")
    assert "s0" not in sessions and "s1" in sessions
    now[0] = 20.0  # s1 idle past the TTL; the next call's store visit expires it
    svc.act([ActRequest(observations=OBS[:1], episode_ids=["s2"], steps=[0])])
    assert "s1" not in sessions and "s2" in sessions

    policy = LLMPolicy(cartpole, get_engine(tiny_model_dir, "", "hf", "fp32", live="reset"),
                       LLMPolicyConfig(temperature=0, history=2))
    policy.reset(0, 0)
    policy.act([np.asarray(OBS[0], np.float32)], [0])
    key = policy.episodes[0]
    assert key in policy.engine._sessions
    policy.reset(0, 1)  # the slot's next episode: the last one's cache is of no more use
    assert key not in policy.engine._sessions


# --- item 10: one thread at a time on the tokenizer ---------------------------------------

class OneThreadTokenizer:
    """The real tokenizer, refusing use from a second thread while a first is inside it (as a
    fast tokenizer's Rust core does with "Already borrowed" when one of them changes its
    padding or truncation); each use lasts a little longer, so overlaps show."""

    def __init__(self, inner):
        self.inner, self.busy, self.guard = inner, 0, threading.Lock()

    def _use(self, method, *args, **kwargs):
        with self.guard:
            self.busy += 1
            clash = self.busy > 1
        try:
            if clash:
                raise RuntimeError("Already borrowed")
            time.sleep(0.001)
            return method(*args, **kwargs)
        finally:
            with self.guard:
                self.busy -= 1

    def __call__(self, *args, **kwargs):
        return self._use(self.inner, *args, **kwargs)

    def decode(self, *args, **kwargs):
        return self._use(self.inner.decode, *args, **kwargs)

    def batch_decode(self, *args, **kwargs):
        return self._use(self.inner.batch_decode, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_concurrent_act_and_chat_share_the_tokenizer_safely(tiny_model_dir, monkeypatch):
    from policylm.platform.engines.hf import HFEngine

    svc = PolicyService(uri(tiny_model_dir))
    engine = HFEngine(tiny_model_dir, dtype="fp32")  # its own: the tokenizer is replaced
    monkeypatch.setattr(engine, "tokenizer", OneThreadTokenizer(engine.tokenizer))
    monkeypatch.setattr(svc.policy, "engine", engine)
    errors: list[BaseException] = []

    def run(work) -> None:
        for _ in range(6):
            try:
                for out in work():
                    if isinstance(out, Exception):
                        errors.append(out)
            except Exception as err:  # every failure is what the test counts
                errors.append(err)

    chat = ChatRequest(messages=[{"role": "user", "content": "left or right?"}], max_tokens=3)
    works = [lambda: svc.act([ActRequest(observations=OBS)]),
             lambda: svc.act([ActRequest(texts=["x=0.1 v=0.2"] * 3)]),
             lambda: svc.chat([chat]), lambda: svc.chat([chat, chat])]
    threads = [threading.Thread(target=run, args=(w,)) for w in works]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
