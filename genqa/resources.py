"""Data folders shipped with genqa (the Jinja templates and the tiny sample data), found the same way in a source
checkout and in an installed wheel.

The repository keeps them at its top level (`templates/`, `data/tiny/`); `pyproject.toml` maps those folders into the
package as `genqa/templates` and `genqa/sample_data`, so a wheel carries them without a copy in the tree.
`importlib.resources` finds them inside an installed package; in a checkout (or an editable install) the package
folder has no such subfolder and the repository's own folder is used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: name inside the installed package -> folder in the source checkout (relative to the repository root)
SOURCE_FOLDERS = {"templates": "templates", "sample_data": "data/tiny"}


def resource_dir(name: str) -> Path:
    """The folder of shipped resource `name` (`templates` or `sample_data`)."""
    packaged = resources.files("genqa") / name
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / SOURCE_FOLDERS[name]
