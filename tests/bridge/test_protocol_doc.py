"""docs/protocol.md is enough to write a client: its example, run as printed, talks to a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.bridge.policies import PushTExpertPolicy

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_documented_client_gets_a_chunk(policy_server):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "protocol.md should hold exactly one Python example"
    server = policy_server(PushTExpertPolicy)
    code = blocks[0].replace("tcp://127.0.0.1:5555", server.address)
    assert "worldsim" not in code  # the example uses only pyzmq, msgpack and numpy
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(8, 2)"
