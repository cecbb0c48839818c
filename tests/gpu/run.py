"""Run the GPU smoke suite without pytest (an offline GPU machine may not have it):

    python tests/gpu/run.py

from the repository root. Runs every ``test_*`` function of ``test_gpu_smoke.py``, prints one
line per test, then one JSON line (device, passed, failed, seconds, peak GPU memory), and exits
1 when a test failed or there is no device to run on.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # this folder's helpers; the policylm package
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import smoke  # noqa: E402
import test_gpu_smoke  # noqa: E402


def main() -> int:
    """Run the suite; the exit status says whether every test passed on a device."""
    if not smoke.device():
        print(json.dumps({"suite": "gpu_smoke", "ok": False, "error": "no CUDA device "
                          f"(torch.cuda.is_available() is False; {smoke.DEVICE_VAR}=cpu runs "
                          "the suite on a CPU)"}))
        return 1
    start, failed, passed = time.perf_counter(), [], []
    for name in sorted(n for n in dir(test_gpu_smoke) if n.startswith("test_")):
        t0 = time.perf_counter()
        try:
            getattr(test_gpu_smoke, name)()
        except Exception:  # a failed assert or an error: report it, run the rest
            failed.append(name)
            print(f"FAIL {name} ({time.perf_counter() - t0:.1f} s)\n{traceback.format_exc()}")
        else:
            passed.append(name)
            print(f"ok   {name} ({time.perf_counter() - t0:.1f} s)")
    print(json.dumps({"suite": "gpu_smoke", "ok": not failed, "device": smoke.device(),
                      "passed": len(passed), "failed": failed,
                      "seconds": round(time.perf_counter() - start, 1),
                      "peak_gpu_memory_gb": smoke.peak_memory_gb()}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
