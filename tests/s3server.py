"""A real S3 API on loopback for the tests: moto's server in a subprocess; used by conftest's `s3` fixtures.

The server is moto's own HTTP server (``python -m moto.server``), spoken to over TCP by every client under
test (pyarrow's AWS SDK, Spark's s3a with the AWS Java SDK, delta-rs's object_store, boto3), exactly as
they would speak to AWS or MinIO. It binds 127.0.0.1 only and dies with the test process: on stop(), at
interpreter exit, and (Linux) when the parent dies without either.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

# Test-only credentials: moto accepts any; the values exist so that every client finds the standard variables.
ACCESS_KEY = "portprint-test-access-key"
SECRET_KEY = "portprint-test-secret-key-" + uuid.uuid4().hex
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class S3Server:
    """moto's S3 server on a free loopback port; ``env()`` gives the standard AWS_* variables for it."""

    def __init__(self, log_path: str | None = None) -> None:
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._log_path = log_path
        self._log = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, attempts: int = 3, timeout_s: float = 30.0) -> S3Server:
        last = ""
        for _ in range(attempts):  # the free port may be taken between probe and bind: try another
            self.port = _free_port()
            self._log = open(self._log_path or os.devnull, "ab")  # noqa: SIM115 - closed in stop()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, preexec_fn=_die_with_parent)
            atexit.register(self.stop)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2):
                        return self
                except (urllib.error.URLError, ConnectionError, OSError) as exc:
                    last = str(exc)
                    time.sleep(0.2)
            self.stop()
        raise RuntimeError(f"moto's S3 server did not start on 127.0.0.1 ({last})")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def env(self) -> dict[str, str]:
        """The standard variables every S3 client reads (AWS SDKs, s3a, delta-rs, pyarrow)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}

    def client(self):
        """A boto3 client: the independent view of what the store holds."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def new_bucket(self, prefix: str = "portprint") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
