"""The GitHub Actions workflow: actionlint accepts it (and rejects a broken copy), and it runs
the forced figure regeneration, uploads the site and deploys it only from main."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
SITE = REPO / ".github" / "workflows" / "site.yml"
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    """Run actionlint; shellcheck and pyflakes off, so the verdict does not depend on PATH."""
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", "-shellcheck=", "-pyflakes=", *map(str, paths)],
        capture_output=True, text=True, cwd=REPO,
    )


def test_actionlint_accepts_every_workflow() -> None:
    assert WORKFLOWS, "no workflow in .github/workflows"
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("inputs.runner ||", "inputs.runnr ||", "runnr"),  # an undefined input
        ("actions/deploy-pages@v5", "actions/deploy-pages@v4", "deprecated"),  # node20 action
        ("    needs: build\n", "    needs: biuld\n", "biuld"),  # a job that does not exist
    ],
)
def test_actionlint_rejects_a_broken_copy(
    tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    text = SITE.read_text()
    assert old in text
    broken = tmp_path / ".github" / "workflows" / "site.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new, 1))
    result = actionlint(broken)
    assert result.returncode != 0 and complaint in result.stdout


def test_the_workflow_regenerates_every_figure_and_deploys_only_from_main() -> None:
    text = SITE.read_text()
    assert "runs-on: ${{ inputs.runner || vars.FIGGEN_RUNNER || 'ubuntu-latest' }}" in text
    assert "make figures-clean\n" in text  # the cache is dropped: every script runs again
    assert "FIGGEN_MODE: run\n" in text and "FIGGEN_ON_ERROR: strict\n" in text  # not frozen
    assert 'make publish PELICAN_OPTS="--fatal errors"' in text
    assert "actions/upload-pages-artifact@" in text and "actions/deploy-pages@" in text
    deploy = text[text.index("\n  deploy:"):]
    assert "if: github.event_name != 'pull_request' && github.ref == 'refs/heads/main'" in deploy
    assert "pages: write" in deploy and "id-token: write" in deploy
