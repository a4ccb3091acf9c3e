"""The LiteLLM Proxy as an operator starts it (`litellm --config cfg.yaml --num_workers N`), in a
process group of its own, for tests/python/with_litellm/test_litellm_proxy.py and benches/test_litellm_proxy.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LITELLM_CLI = Path(sys.executable).with_name("litellm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyProcess:
    """`litellm --config` with `config` (YAML text) and `workers` workers on a free port of
    127.0.0.1; its output in `tmp/<name>.log`, its workers' Prometheus files in
    `tmp/<name>-metrics`. `env` adds to the environment."""

    def __init__(self, tmp: Path, name: str, config: str, workers: int, **env: str) -> None:
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_path = tmp / f"{name}.yaml"
        config_path.write_text(config)
        multiproc = tmp / f"{name}-metrics"
        multiproc.mkdir()
        self.log_path = tmp / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(LITELLM_CLI), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(self.port),
             "--num_workers", str(workers)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PROMETHEUS_MULTIPROC_DIR": str(multiproc), **env},
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the proxy exited: {self.tail()}")
            if self.log_path.read_bytes().count(b"Application startup complete") >= self.workers:
                return
            time.sleep(0.3)
        raise AssertionError(f"the proxy did not start in {timeout} s: {self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")

    def metrics(self, master_key: str) -> str:
        response = httpx.get(f"{self.url}/metrics/", headers={"Authorization": f"Bearer {master_key}"}, timeout=60)
        assert response.status_code == 200, response.text
        return response.text

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # the proxy and its workers (their own group)
            self.process.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.log.close()
