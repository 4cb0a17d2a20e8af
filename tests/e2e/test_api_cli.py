"""`sluice api-keys` and `sluice api` as a user runs them, from a fresh directory."""

import json
import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import kill_group
from tests.e2e.test_cli import SLUICE, sluice
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.e2e


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_api_keys_and_the_api_server(tmp_path: Path):
    created = sluice("api-keys", "create", "--tenant", "acme", "--name", "ci", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["key"].startswith("sk_") and key["callback_secret"].startswith("whsec_")
    assert "not shown again" in created.stderr
    listed = sluice("api-keys", "list", cwd=tmp_path).stdout
    assert key["id"] in listed and key["key"] not in listed
    bad = sluice("api-keys", "create", "--tenant", "a b", cwd=tmp_path)
    assert bad.returncode == 2 and "bad tenant name" in bad.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    proc = subprocess.Popen(
        [SLUICE, "api", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(f"{base}/healthz"), 60, "sluice api to answer")
        auth = {"Authorization": f"Bearer {key['key']}"}
        assert httpx.get(f"{base}/v1/jobs", headers=auth).json() == {"jobs": []}
        assert httpx.get(f"{base}/v1/jobs").status_code == 401
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "Sluice"
        assert sluice("api-keys", "revoke", key["id"], cwd=tmp_path).returncode == 0
        assert httpx.get(f"{base}/v1/jobs", headers=auth).status_code == 401
    finally:
        kill_group(proc)
