"""Run a check script in a fresh interpreter where `fourfold` cannot be imported, as on a machine without it.

Used by the tests that load saved or pushed folders with `trust_remote_code=True`: whatever they prove, they prove
with the Hub copy of the code only.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

BLOCK_FOURFOLD = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockFourfold(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "fourfold" or name.startswith("fourfold."):
                raise ImportError(f"{name} is blocked: the Hub code must work without fourfold")

    sys.meta_path.insert(0, BlockFourfold())
    sys.modules["fourfold"] = None
    try:
        import fourfold  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("fourfold is importable; the test would prove nothing")
    """
)


def run_without_fourfold(script: str, argument: Path, work_dir: Path) -> str:
    """Runs `script` (after the import blocker) as `python check.py ARGUMENT` in `work_dir`, offline, with its own
    HF caches; asserts it succeeds and returns its standard output."""
    (work_dir / "check.py").write_text(BLOCK_FOURFOLD + textwrap.dedent(script))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(work_dir / "hf_home"),
        "HF_MODULES_CACHE": str(work_dir / "modules"),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, "check.py", str(argument)], cwd=work_dir, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
