"""Where the site's files are: static/ and templates/ live at the repository's root, beside
app/, and are packed into the wheel as rnnscope/static and rnnscope/templates, again beside
rnnscope/app (pyproject.toml's package-dir)."""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def site_dir(name: str) -> Path:
    """The folder beside app/: in the wheel and in the checkout alike."""
    candidate = PACKAGE_DIR.parent / name
    if not candidate.is_dir():
        raise FileNotFoundError(f"rnnscope's {name}/ is not beside {PACKAGE_DIR}: reinstall the package")
    return candidate


STATIC_DIR = site_dir("static")
TEMPLATES_DIR = site_dir("templates")
