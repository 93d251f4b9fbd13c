import os

# Headless MuJoCo rendering; must be set before mujoco is imported anywhere.
os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

# Tests use tiny models on a 2-core machine: one thread avoids oversubscription stalls and keeps runs steady.
torch.set_num_threads(1)
