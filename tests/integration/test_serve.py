"""A real Ray Serve app with two replicas on loopback, called over HTTP: actions equal the
in-process policy's, the adaptive target right whichever replica serves a call, 401/413/422, a
hostile client that does not stall the others, the OpenAI-compatible route through the
``openai`` client, and the ``http://`` and ``openai://`` policy URIs driving ``evaluate``."""

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

pytestmark = pytest.mark.integration

PORT = 18437
KEY = "test-key-123"
OBS = [[0.01, -0.2, 0.03, 0.25], [-0.04, 0.5, -0.02, -0.4], [0.1, 0.9, -0.1, -1.2]]


def call(path, body=None, key=KEY, method=None, raw=None, replica=False):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=data, headers=headers,
                                 method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            out = resp.status, json.loads(resp.read())
            return (*out, resp.headers["x-policylm-replica"]) if replica else out
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def server(ray_local, tiny_model_dir):
    from ray import serve

    from policylm.serve.app import ServeConfig, start

    uri = f"hf://{tiny_model_dir}?temperature=0&target_return=50&dtype=fp32"
    cfg = ServeConfig(policy=uri, port=PORT, api_key=KEY, max_body_bytes=200_000, num_cpus=0.5,
                      num_replicas=2, max_batch_size=8, max_observations=64,
                      max_prompt_tokens=256, max_rows_per_call=16, large_request_rows=8,
                      block=False)
    url = start(cfg)
    yield url, uri
    serve.shutdown()


def test_act_over_http_matches_in_process(server, tiny_model_dir):
    from policylm.platform.envs import make_adapter
    from policylm.platform.policies import policy_from_uri

    _, uri = server
    status, body = call("/v1/act", {"observations": OBS, "steps": [0, 0, 0]})
    assert status == 200
    policy = policy_from_uri(uri, make_adapter("CartPole-v1"))
    for slot in range(3):
        policy.reset(slot, slot)
    want = policy.act([np.asarray(o, np.float32) for o in OBS], [0, 1, 2])
    assert [a["action"] for a in body["actions"]] == want
    assert all(set(a["scores"]) == {"left", "right"} for a in body["actions"])
    status, info = call("/v1/policy")
    assert status == 200 and info["env_id"] == "CartPole-v1" and info["mode"] == "score"
    assert info["valid_actions"] == ["left", "right"]
    status, schema = call("/openapi.json", key="")
    assert status == 200 and "/v1/act" in schema["paths"]


def test_adaptive_target_across_calls(server):
    first = call("/v1/act", {"observations": OBS[:1], "episode_ids": ["e1"],
                             "target_return": 30})[1]
    status, ep = call("/v1/episodes/e1/reward", {"reward": 4})
    assert status == 200 and ep["remaining_target"] == 26
    second = call("/v1/act", {"observations": OBS[:1], "episode_ids": ["e1"]})[1]
    third = call("/v1/act", {"observations": OBS[:1], "episode_ids": ["e1"],
                             "rewards": [1.5]})[1]
    got = [(b["actions"][0]["target_return"], b["actions"][0]["step"])
           for b in (first, second, third)]
    assert got == [(30, 0), (26, 1), (24.5, 2)]
    assert call("/v1/episodes/e1", method="DELETE")[1]["earned"] == 5.5
    assert call("/v1/episodes/e1/reward", {"reward": 1})[0] == 404


def test_episode_state_is_right_whichever_replica_serves(server):
    """Six episodes of eight steps, stepped concurrently: calls land on both replicas, and every
    call's step and remaining target are what one replica would give."""
    from concurrent.futures import ThreadPoolExecutor

    def episode(k: int) -> tuple[list, set]:
        eid, target, earned, got, replicas = f"multi-{k}", 40.0 + k, 0.0, [], set()
        for step in range(8):
            reward = float(step % 3)  # reward earned since the previous call
            body = {"observations": OBS[:1], "episode_ids": [eid], "rewards": [reward],
                    **({"target_return": target} if step == 0 else {})}
            status, out, replica = call("/v1/act", body, replica=True)
            assert status == 200
            earned += reward
            a = out["actions"][0]
            got.append((a["step"], a["target_return"], step, round(target - earned, 2)))
            replicas.add(replica)
            if step == 4:  # a reward report between calls, to whichever replica
                status, ep, replica = call(f"/v1/episodes/{eid}/reward", {"reward": 0.5},
                                           replica=True)
                assert status == 200 and ep["step"] == 5
                earned += 0.5
                replicas.add(replica)
        status, ep = call(f"/v1/episodes/{eid}", method="DELETE")
        assert status == 200 and ep["step"] == 8 and ep["earned"] == earned
        return got, replicas

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(episode, range(6)))
    for got, _ in results:
        assert [(s, r) for s, r, _, _ in got] == [(s, r) for _, _, s, r in got]
    assert len(set.union(*(r for _, r in results))) == 2  # both replicas served


def test_history_is_right_whichever_replica_serves(server, tiny_model_dir):
    """A history=2 policy on two replicas (a second application): four episodes of six steps,
    stepped concurrently, land on both replicas, and every action's scores are the in-process
    policy's on the same observations (prompts holding the episode's earlier steps)."""
    from concurrent.futures import ThreadPoolExecutor

    from policylm.platform.envs import make_adapter
    from policylm.platform.policies import policy_from_uri
    from policylm.serve.app import ServeConfig, start

    uri = f"hf://{tiny_model_dir}?temperature=0&target_return=20&dtype=fp32&history=2"
    start(ServeConfig(policy=uri, port=PORT, api_key=KEY, num_cpus=0.25, num_replicas=2,
                      name="history", route_prefix="/h", block=False))
    rng = np.random.default_rng(3)
    obs = rng.normal(0, 0.2, (4, 6, 4)).round(3)

    def episode(k: int) -> tuple[list, set]:
        scores, replicas = [], set()
        for t in range(6):
            body = {"observations": [obs[k, t].tolist()], "episode_ids": [f"h-{k}"],
                    "rewards": [1.0 if t else 0.0]}
            status, out, replica = call("/h/v1/act", body, replica=True)
            assert status == 200 and out["actions"][0]["step"] == t
            scores.append(out["actions"][0]["scores"])
            replicas.add(replica)
        return scores, replicas

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(episode, range(4)))
    assert len(set.union(*(r for _, r in results))) == 2  # both replicas served
    policy = policy_from_uri(uri, make_adapter("CartPole-v1"))
    for k, (scores, _) in enumerate(results):
        policy.reset(k, k)
        for t in range(6):
            (prompt,) = policy.prompts([obs[k, t].astype(np.float32)], [k])
            want = policy.engine.score([prompt], [["left", "right"]])[0]
            assert np.allclose([scores[t]["left"], scores[t]["right"]], want, atol=1e-4)
            policy.act([obs[k, t].astype(np.float32)], [k])
            policy.observe([k], [1.0])
    status, body = call("/h/v1/act", {"observations": OBS[:1]})
    assert status == 422 and "episode_ids" in json.dumps(body)
    from ray import serve

    serve.delete("history")


def test_a_hostile_client_does_not_stall_the_others(server):
    """16 clients acting one observation at a time keep their p90 latency within 3x while one
    client sends the largest requests the limits allow, and every request succeeds. (p90, not
    p99: over 96 requests p99 is the single slowest one, which a 2-core machine's scheduling
    noise alone pushed past 3x; a stalled replica makes most requests wait a whole hostile
    call, far past 3x at p90.)"""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    def client(k: int) -> list[float]:
        out = []
        for step in range(6):
            t0 = time.perf_counter()
            status, _ = call("/v1/act", {"observations": OBS[:1], "steps": [step]})
            assert status == 200
            out.append(time.perf_counter() - t0)
        return out

    def p90(latencies: list[list[float]]) -> float:
        return float(np.percentile([x for xs in latencies for x in xs], 90))

    call("/v1/act", {"observations": OBS[:1]})  # warm
    with ThreadPoolExecutor(16) as pool:
        calm = p90(list(pool.map(client, range(16))))
    stop, hostile = threading.Event(), []

    def attack() -> None:
        worst = {"texts": ["w " * 120] * 64}  # 64 observations of ~240 tokens: at the limits
        while not stop.is_set():
            hostile.append(call("/v1/act", worst)[0])

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        time.sleep(0.5)
        with ThreadPoolExecutor(16) as pool:
            stormy = p90(list(pool.map(client, range(16))))
    finally:
        stop.set()
        attacker.join()
    assert hostile and set(hostile) == {200}
    assert stormy <= 3 * calm, (calm, stormy)


def test_rejections(server):
    assert call("/v1/act", {"observations": OBS}, key="")[0] == 401
    assert call("/v1/act", {"observations": OBS}, key="wrong")[0] == 401
    assert call("/v1/health", key="")[0] == 200
    status, body = call("/v1/act", {"texts": ["x" * 300_000]})
    assert status == 413 and "max_body_bytes" in body["detail"]
    status, body = call("/v1/act", {"texts": ["x=0"] * 65})
    assert status == 413 and "max_observations" in body["detail"]
    status, body = call("/v1/act", {"texts": ["w " * 300]})
    assert status == 422 and "max_prompt_tokens" in body["detail"]
    status, body = call("/v1/act", raw=b"{not json")
    assert status == 422
    status, body = call("/v1/act", {"observations": [[1.0, 2.0]]})
    assert status == 422 and body["field"] == "requests[0].observations[0]"
    status, body = call("/v1/chat/completions", {"messages": [], "max_tokens": 4})
    assert status == 422 and "messages" in json.dumps(body)
    assert call("/v1/act", {"observations": OBS[:1]})[0] == 200  # still serving


def test_a_lost_episode_store_is_an_error_not_a_restart(server, monkeypatch):
    """Mid-episode, a retried step is answered again and its reward counts once; then the
    episode store's replica is killed (Serve starts an empty one): the episode's next step gets
    404 saying what to do, never a silent restart at step 0 with the default target, and the
    ``http://`` policy raises a RemoteError that says the episode was lost."""
    import time

    import ray

    from policylm.platform.envs import make_adapter
    from policylm.platform.policies import policy_from_uri
    from policylm.platform.policies.remote import RemoteError

    def body(t: int, reward: float) -> dict:
        return {"observations": OBS[:1], "episode_ids": ["doomed"], "steps": [t],
                "rewards": [reward], **({"target_return": 30} if t == 0 else {})}

    for t in range(3):
        status, out = call("/v1/act", body(t, 1.0 if t else 0.0))
        assert status == 200 and out["actions"][0]["step"] == t
    assert call("/v1/act", body(2, 1.0)) == (200, out)  # the answer lost on its way: again
    status, ep = call("/v1/episodes/doomed/reward", {"reward": 0.0})
    assert (ep["step"], ep["earned"]) == (3, 2.0)
    monkeypatch.setenv("POLICYLM_API_KEY", KEY)
    policy = policy_from_uri(f"http://127.0.0.1:{PORT}?target_return=30&retries=0",
                             make_adapter("CartPole-v1"))
    policy.reset(0, 0)
    for _ in range(2):
        policy.act([np.asarray(OBS[0], np.float32)], [0])
        policy.observe([0], [1.0])

    (store,) = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::policylm#EpisodeStoreDeployment#")]
    ray.kill(ray.get_actor(store["name"], namespace=store["namespace"]))
    deadline = time.monotonic() + 120
    while True:  # 500 while Serve replaces the replica, then the empty store answers
        status, out = call("/v1/act", body(3, 1.0))
        assert status != 200, f"the lost episode restarted silently: {out}"
        if status != 500 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 404 and "new episode id" in out["detail"], out
    with pytest.raises(RemoteError, match="no longer knows an episode") as err:
        policy.act([np.asarray(OBS[0], np.float32)], [0])
    assert err.value.status == 404
    status, out = call("/v1/act", {**body(0, 0.0), "episode_ids": ["reborn"]})
    assert status == 200 and out["actions"][0]["target_return"] == 30


def test_openai_client_chat_completions(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{PORT}/v1", api_key=KEY)
    out = client.chat.completions.create(
        model="policy", messages=[{"role": "user", "content": "left or right?"}],
        max_tokens=4, temperature=0, n=2)
    assert len(out.choices) == 2 and out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == out.choices[1].message.content  # greedy
    usage = out.usage  # a random tiny model may answer with nothing but special tokens
    assert usage.prompt_tokens > 5 and usage.completion_tokens <= 2 * 4
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_http_and_openai_uris_drive_evaluate(server, tmp_path, monkeypatch):
    from policylm.jobs.evaluate import EvaluateConfig, main

    monkeypatch.setenv("POLICYLM_API_KEY", KEY)
    http = main(EvaluateConfig(policy=f"http://127.0.0.1:{PORT}", targets=[10, 400],
                               episodes=2, num_workers=0, envs_per_worker=2,
                               out=str(tmp_path / "http")))
    assert [m["count"] for m in http["targets"].values()] == [2, 2]
    assert all(m["mean"] >= 8 for m in http["targets"].values())  # CartPole lasts >= 8 steps
    oai = main(EvaluateConfig(policy=f"openai://127.0.0.1:{PORT}/v1?model=policy&max_new_tokens=3",
                              targets=[50], episodes=1, num_workers=0, envs_per_worker=1,
                              out=str(tmp_path / "openai")))
    (m,) = oai["targets"].values()
    assert m["count"] == 1
    # a random tiny model does not answer left or right: its fallbacks are counted, not hidden
    assert oai["invalid_rate"]["target_50"] > 0.5
    assert (tmp_path / "openai" / "report.md").is_file()


def test_server_not_running_is_named(tmp_path):
    import time

    from policylm.platform.envs import make_adapter
    from policylm.platform.policies import PolicyError, policy_from_uri

    policy = policy_from_uri("http://127.0.0.1:9?wait=1.5", make_adapter("CartPole-v1"))
    t0 = time.monotonic()
    with pytest.raises(Exception, match=r"127\.0\.0\.1:9/v1/health: no answer .*is the server "
                                        r"running.*waited 1\.5 s"):
        policy.act([np.zeros(4, np.float32)], [0])
    assert 1.5 <= time.monotonic() - t0 < 10  # it waited for the server, then said so
    with pytest.raises(PolicyError, match="unknown http:// parameters"):
        policy_from_uri("http://127.0.0.1:9?api_key=x", make_adapter("CartPole-v1"))
