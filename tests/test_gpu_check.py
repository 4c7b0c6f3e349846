"""benchmarks/gpu_check.py, the prepared GPU check, keeps working on a machine without CUDA."""
import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour; on CUDA run the script itself")
def test_gpu_check_skips_the_cuda_parts_by_name_and_smoke_runs_the_rest(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = gpu_check.main(["--out", str(tmp_path / "gpu.md")])
    plain = out.read_text()
    assert plain.count("- skipped:") == 4 and "no CUDA device" in plain
    gpu_check.main(["--smoke", "--out", str(out)])                       # appended, not overwritten
    text = out.read_text()
    assert text.startswith(plain) and "smoke run (no CUDA)" in text
    assert "pure-PyTorch ssd_scan: forward+backward" in text
    assert "tiny batch 2 fp32 eager: step" in text
    assert "DDIM 250 steps (smoke: 3 steps)" in text and "DPM-Solver++ 20 steps (smoke: 3 steps)" in text
