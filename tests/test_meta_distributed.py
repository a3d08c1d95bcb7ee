"""Two CPU processes on loopback run one sharded meta-step through jax.distributed."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_meta_step_completes_with_identical_meta_params(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "distributed_worker.py"), str(i), "2", str(port),
             str(tmp_path / f"out{i}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=540)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("distributed workers timed out")
        outs.append(out)
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    a, b = (np.load(tmp_path / f"out{i}.npz") for i in range(2))
    np.testing.assert_array_equal(a["meta"], b["meta"])  # both processes hold the same meta-params
    assert float(a["loss"]) == float(b["loss"]) and np.isfinite(float(a["loss"]))
    np.testing.assert_array_equal(a["steps"], [4, 4, 4, 4])
