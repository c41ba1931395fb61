"""transformers' own common model tests, fetched from its PyPI source distribution and run against fourfold.

`load()` downloads the sdist of the installed transformers version once (`pip download`, cached under
`<repo>/.cache/transformers-sdist/<version>/`), extracts `tests/test_modeling_common.py` and
`tests/test_configuration_common.py` into a package `hf_common`, and returns it. The sdist ships only the top level
of transformers' `tests/`; the three modules those two files import from deeper folders are replaced by the
stand-ins in `shims/` (see each one's docstring). `registered_names()` adds fourfold's classes to transformers'
`MODEL_FOR_*_MAPPING_NAMES` tables, which the common tests consult to decide which labels a head takes.
"""

import contextlib
import importlib
import shutil
import subprocess
import sys
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import transformers
from transformers.models.auto import modeling_auto

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "transformers-sdist" / transformers.__version__
PACKAGE = "hf_common"
SDIST_FILES = ("tests/test_modeling_common.py", "tests/test_configuration_common.py")
SHIMS_DIR = Path(__file__).parent / "shims"


class Unavailable(RuntimeError):
    """The sdist could not be fetched or lacks the files; the caller skips with this message."""


def load():
    """The `hf_common` package: `hf_common.test_modeling_common`, `hf_common.test_configuration_common`."""
    package_dir = CACHE_DIR / PACKAGE
    if not all((package_dir / Path(name).name).exists() for name in SDIST_FILES):
        _extract(_download(), package_dir)
    # the shims are ours and may change: refresh them on every load
    shutil.copytree(SHIMS_DIR, package_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    if str(CACHE_DIR) not in sys.path:
        sys.path.insert(0, str(CACHE_DIR))
    with warnings.catch_warnings():  # transformers' own pytest marks (flash_attn_test, ...) are unknown here
        warnings.simplefilter("ignore")
        try:
            importlib.import_module(f"{PACKAGE}.test_configuration_common")
            importlib.import_module(f"{PACKAGE}.test_modeling_common")
        except ModuleNotFoundError as error:  # a test-only dependency, e.g. `parameterized`
            raise Unavailable(f"they need {error.name!r}: pip install -e '.[test]'") from error
    return sys.modules[PACKAGE]


def _download() -> Path:
    version = transformers.__version__
    archives = sorted(CACHE_DIR.glob(f"transformers-{version}.tar.gz"))
    if archives:
        return archives[0]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
    command += ["--disable-pip-version-check", "--timeout", "20", "--retries", "1", "-d", str(CACHE_DIR)]
    try:
        result = subprocess.run(
            [*command, f"transformers=={version}"], capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"could not download the transformers=={version} sdist from PyPI: {error}") from error
    archives = sorted(CACHE_DIR.glob(f"transformers-{version}.tar.gz"))
    if result.returncode != 0 or not archives:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Unavailable(f"could not download the transformers=={version} sdist from PyPI (pip: {tail[0]})")
    return archives[0]


def _extract(archive: Path, package_dir: Path) -> None:
    """Copies the wanted test files (and nothing else) out of the archive."""
    tmp_dir = package_dir.with_name(package_dir.name + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        members = {member.name.split("/", 1)[-1]: member for member in tar.getmembers() if member.isfile()}
        for name in SDIST_FILES:
            if name not in members:
                raise Unavailable(f"{archive.name} has no {name}")
            (tmp_dir / Path(name).name).write_bytes(tar.extractfile(members[name]).read())
    shutil.rmtree(package_dir, ignore_errors=True)
    tmp_dir.rename(package_dir)


@contextlib.contextmanager
def registered_names(tables: dict[str, dict[str, str]]) -> Iterator[None]:
    """Adds `{table name: {model_type: class name}}` to transformers' mapping-name tables, and removes it after."""
    added = []
    for table_name, entries in tables.items():
        table = getattr(modeling_auto, table_name)
        for model_type, class_name in entries.items():
            if model_type not in table:
                table[model_type] = class_name
                added.append((table, model_type))
    try:
        yield
    finally:
        for table, model_type in added:
            del table[model_type]
