"""Skip the GPU smoke suite where there is no CUDA device (unless
``POLICYLM_GPU_SMOKE_DEVICE`` names one), and print its peak GPU memory at the end."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import smoke


def pytest_collection_modifyitems(config, items):
    if smoke.device():
        return
    skip = pytest.mark.skip(reason="no CUDA device (the GPU smoke suite; "
                            f"{smoke.DEVICE_VAR}=cpu runs it on a CPU)")
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if smoke.device():
        terminalreporter.write_line(json.dumps({"suite": "gpu_smoke", "device": smoke.device(),
                                                "peak_gpu_memory_gb": smoke.peak_memory_gb()}))
