"""Where the site's files are: static/ and templates/ live at the repository's root and are
packed into the wheel as app/static and app/templates (pyproject.toml's package-dir)."""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def site_dir(name: str) -> Path:
    """The installed copy inside the package if there is one, else the checkout's; the
    editable install and a bare checkout have only the latter."""
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"rnnscope's {name}/ is neither in {PACKAGE_DIR} nor beside it: "
                            f"reinstall the package")


STATIC_DIR = site_dir("static")
TEMPLATES_DIR = site_dir("templates")
