"""The repository's conventions agree with pyproject.toml: LICENSE, CITATION.cff, CHANGELOG."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_file_is_the_license_pyproject_declares():
    assert PROJECT["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole text, not a stub


def test_citation_names_the_toolkits_version_license_and_the_paper():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["version"] == PROJECT["version"]
    assert citation["license"] == PROJECT["license"]
    (paper,) = citation["references"]
    assert paper["title"] == "Midtraining Bridges Pretraining and Posttraining Distributions"
    assert [a["family-names"] for a in paper["authors"]] == ["Liu", "Neubig", "Xiong"]
    assert paper["doi"] == "10.48550/arXiv.2510.14865"


def test_changelog_has_a_section_for_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{PROJECT['version']}]" in text
