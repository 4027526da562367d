"""Data folders shipped with genqa (the Jinja templates, the tiny sample data, the recipes and the accelerate
configs), found the same way in a source checkout and in an installed wheel.

The repository keeps them at its top level (`templates/`, `data/tiny/`, `recipes/`, `accelerate_configs/`);
`pyproject.toml` maps those folders into the package under the same names (`data/tiny` as `genqa/sample_data`), so
a wheel carries them without a copy in the tree.
`importlib.resources` finds them inside an installed package; in a checkout (or an editable install) the package
folder has no such subfolder and the repository's own folder is used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: name inside the installed package -> folder in the source checkout (relative to the repository root)
SOURCE_FOLDERS = {"templates": "templates", "sample_data": "data/tiny", "recipes": "recipes",
                  "accelerate_configs": "accelerate_configs"}


def resource_dir(name: str) -> Path:
    """The folder of shipped resource `name` (`templates`, `sample_data`, `recipes` or `accelerate_configs`)."""
    packaged = resources.files("genqa") / name
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / SOURCE_FOLDERS[name]
