"""The source directory a SageMaker job runs: the spellfix package, recipes, entry point, requirements.

Layout (uploaded by the SDK as the job's ``code`` channel, the container's working directory)::

    spellfix/            the library, exactly as it is here (no __pycache__)
    recipes/             the shipped recipes
    data/                shipped resources the library reads at run time (noise confusion lists)
    launch/entry.py      the entry script (torchrun runs it once per GPU)
    job/recipe.yaml      the resolved recipe of this launch (overrides applied, data -> channels)
    job/launch.json      provenance: spellfix version, git commit, options, when it was built
    requirements.txt     spellfix's dependencies minus torch (the image's CUDA build must stay)

Shipping the resolved recipe as a file rather than as a hyperparameter is deliberate: SageMaker caps a
hyperparameter value at 2,500 characters and a full recipe is about that size.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import spellfix
from spellfix.launch.plan import BUNDLED_RECIPE, ENTRY_SCRIPT

PACKAGE_DIR = Path(spellfix.__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")

#: Used when spellfix is installed without the repository's launch/ directory.
ENTRY_STUB = '''"""SageMaker entry point (generated): see spellfix.launch.entry."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spellfix.launch.entry import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
'''

#: Packages never written to requirements.txt: the training image's own CUDA build of torch must not
#: be replaced by whatever pip resolves (that is how a V100 image ends up without sm_70 kernels).
EXCLUDED_REQUIREMENTS = {"torch"}


def build_source_bundle(dest: Path, recipe_yaml: str, launch_info: dict[str, Any] | None = None) -> Path:
    """Write the job's source directory into ``dest`` (created; must not exist or be empty)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; the source bundle needs a fresh directory")
    shutil.copytree(PACKAGE_DIR, dest / "spellfix", ignore=IGNORE)
    for shipped in ("recipes", "data"):
        if (REPO_ROOT / shipped).is_dir():
            shutil.copytree(REPO_ROOT / shipped, dest / shipped, ignore=IGNORE)
    entry = dest / ENTRY_SCRIPT
    entry.parent.mkdir(parents=True, exist_ok=True)
    repo_entry = REPO_ROOT / ENTRY_SCRIPT
    entry.write_text(repo_entry.read_text(encoding="utf-8") if repo_entry.is_file() else ENTRY_STUB, encoding="utf-8")
    (dest / "requirements.txt").write_text("\n".join(job_requirements()) + "\n", encoding="utf-8")
    recipe_file = dest / BUNDLED_RECIPE
    recipe_file.parent.mkdir(parents=True, exist_ok=True)
    recipe_file.write_text(recipe_yaml, encoding="utf-8")
    info = {
        "spellfix_version": spellfix.__version__,
        "git": _git_describe(),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info.update(launch_info or {})
    (recipe_file.parent / "launch.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return dest


def _git_describe() -> str | None:
    """The checkout's commit (``-dirty`` with local changes): what code a job ran, for the record."""
    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def job_requirements() -> list[str]:
    """spellfix's core dependencies (no extras) minus torch, from pyproject.toml when this is a
    checkout (the source of truth), else from the installed package metadata."""
    requirements = _from_pyproject(REPO_ROOT / "pyproject.toml")
    if requirements is None:
        import importlib.metadata

        requirements = [r for r in importlib.metadata.requires("spellfix") or [] if "extra ==" not in r]
    return [r for r in requirements if _requirement_name(r) not in EXCLUDED_REQUIREMENTS]


def _from_pyproject(path: Path) -> list[str] | None:
    if not path.is_file() or sys.version_info < (3, 11):
        return None
    import tomllib

    data = tomllib.loads(path.read_text(encoding="utf-8"))
    deps = data.get("project", {}).get("dependencies")
    return list(deps) if isinstance(deps, list) else None


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1).lower().replace("_", "-") if match else requirement


def bundle_size(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path`` — logged so an accidentally huge bundle is noticed."""
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def stage_local_paths(paths: list[Path], dest: Path) -> Path:
    """Gather several local files/dirs into one directory to upload as one channel.

    Entries are symlinked (no copy of large data; the upload reads through the links) and
    prefixed ``00-``, ``01-`` ... so the job reads them in the recipe's order and equal file names
    from different directories cannot collide.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        target = dest / f"{i:02d}-{path.name}"
        if path.is_dir():
            _link_tree(path, target)
        else:
            target.symlink_to(path)
    return dest


def _link_tree(src: Path, dest: Path) -> None:
    # Real directories with symlinked files: the SDK's upload walks directories with os.walk, which
    # does not descend into symlinked directories.
    dest.mkdir(parents=True, exist_ok=True)
    for child in sorted(src.iterdir()):
        if child.is_dir():
            _link_tree(child, dest / child.name)
        else:
            (dest / child.name).symlink_to(child.resolve())
