"""Reading a file's imports statically: project files followed, installed modules named."""

from __future__ import annotations

import textwrap
from pathlib import Path

from pelican_figgen.imports import closure


def tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_imports_are_followed_through_the_project_and_named_outside_it(tmp_path: Path) -> None:
    tree(tmp_path, {
        "figs/fig.py": "import numpy as np\nfrom pkg import work\n",
        "pkg/__init__.py": "",
        "pkg/work.py": """\
            from . import helper
            from .sub.deep import VALUE
            from scipy import ndimage
            from numpy import ndarray


            def later():
                import torch.nn.functional
        """,
        "pkg/helper.py": "import json\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/deep.py": "VALUE = 1\n",
        "pkg/unused.py": "import pandas\n",
    })
    found = closure(tmp_path / "figs/fig.py", [tmp_path, tmp_path / "figs"])
    assert [f.relative_to(tmp_path).as_posix() for f in found.files] == [
        "figs/fig.py", "pkg/__init__.py", "pkg/work.py", "pkg/helper.py", "pkg/sub/__init__.py",
        "pkg/sub/deep.py",
    ]
    assert found.external == ("json", "numpy", "scipy", "torch.nn.functional")
    # `from scipy import ndimage` may import a module; `pkg.sub.deep.VALUE` is no module.
    assert found.maybe_external == ("numpy.ndarray", "scipy.ndimage")


def test_a_namespace_package_is_followed_and_a_bare_folder_is_not_a_module(
    tmp_path: Path,
) -> None:
    tree(tmp_path, {
        "mod.py": "from helpers.util import X\nimport docs\n",
        "helpers/util.py": "X = 1\nimport yaml\n",  # helpers/ has no __init__.py
        "docs/readme.txt": "a folder named like a package, holding no module",
    })
    found = closure(tmp_path / "mod.py", [tmp_path])
    assert [f.name for f in found.files] == ["mod.py", "util.py"]
    assert found.external == ("docs", "yaml")


def test_a_file_that_does_not_parse_is_listed_and_not_followed(tmp_path: Path) -> None:
    tree(tmp_path, {
        "fig.py": "import numpy\nfrom pkg import broken\n",
        "pkg/__init__.py": "",
        "pkg/broken.py": "import torch\ndef oops(:\n",  # its imports cannot be known
    })
    found = closure(tmp_path / "fig.py", [tmp_path])
    assert [f.name for f in found.files] == ["fig.py", "__init__.py", "broken.py"]
    assert found.external == ("numpy",)


def test_an_edited_file_is_read_again_in_the_same_process(tmp_path: Path) -> None:
    # The warm server of `make serve` outlives edits; what it read is kept by content.
    tree(tmp_path, {"fig.py": "import numpy\n"})
    assert closure(tmp_path / "fig.py", [tmp_path]).external == ("numpy",)
    tree(tmp_path, {"fig.py": "import numpy\n\n\ndef later():\n    import scipy\n"})
    assert closure(tmp_path / "fig.py", [tmp_path]).external == ("numpy", "scipy")
