"""A real ``bge-rerank serve`` process for the tests: loopback, ephemeral port, one torch thread, always stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60
STOP_TIMEOUT = 30


class ServerProcess:
    """``bge-rerank serve --model CHECKPOINT --port 0 ...`` in a subprocess; ``url`` once ``/health`` is 200."""

    def __init__(self, model: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the server writes to it until stop() closes it
            "w+", prefix="bge-serve-", suffix=".log", delete=False
        )
        command = [
            sys.executable,
            "-m",
            "bge_rerank_integrations.cli",
            "serve",
            "--model",
            model,
            "--device",
            "cpu",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--torch-threads",
            "1",
            *args,
        ]
        environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        environment.pop("BGE_RERANK_API_KEY", None)
        environment.update(env or {})
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=environment, cwd=ROOT)
        self.url = self._wait_until_ready()

    def _wait_until_ready(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        url = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            if url is None:
                found = re.search(r"on (http://127\.0\.0\.1:\d+)", self.output())
                url = found.group(1) if found else None
            if url is not None:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not become ready in {START_TIMEOUT}s:\n{self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(encoding="utf-8", errors="replace")

    def terminate(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        try:
            self.terminate()
        finally:
            self.kill()
            self.log.close()
            os.unlink(self.log.name)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus exposition ``text`` (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, sample_labels = sample.partition("{")
        if sample_name == name and ",".join(sorted(sample_labels.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0
