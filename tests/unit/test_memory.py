"""Peak resident memory: this process's high-water mark and its live descendants' (how jobs
and benches report ``peak_rss_gb``)."""

import subprocess
import sys

from policylm.platform.memory import peak_rss_gb, with_memory

HOLD = ("import sys, time; n = int(sys.argv[1]); block = bytearray(n); "
        "block[::4096] = b'x' * len(block[::4096]); print('ready', flush=True); time.sleep(60)")


def test_peak_counts_a_child_process_that_holds_more_than_this_one():
    mine = peak_rss_gb()["self"]
    size = mine + 0.3  # GiB: more than this process ever held, so only the child can explain it
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(int(size * 2**30))],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"  # its pages are touched, resident
        peak = peak_rss_gb()
    finally:
        child.kill()
        child.wait()
    assert size <= peak["largest"] < size + 0.2 and peak["self"] < size
    after = peak_rss_gb()  # the child is gone: only live processes count
    assert after["processes"] == peak["processes"] - 1 and after["largest"] < size


def test_job_metrics_carry_the_peak():
    metrics = with_memory({"episodes": 3})
    assert metrics["episodes"] == 3
    assert set(metrics["peak_rss_gb"]) == {"self", "largest", "processes"}
    assert metrics["peak_rss_gb"]["self"] > 0.01
