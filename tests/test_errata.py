"""The errata table: every equation behaves as the table says, by a clear margin, and
docs/ERRATA.md is the table the code produces."""
import json
import pathlib

import pytest

from fbackprop import cli, errata
from fbackprop.commands.errata import consistent

ROOT = pathlib.Path(__file__).parent.parent


@pytest.fixture(scope="module")
def results():
    return errata.run()


def _id(entry):
    return f"{entry.text}-{entry.where}"


@pytest.mark.parametrize("index", range(len(errata.REGISTRY)),
                         ids=[_id(e) for e in errata.REGISTRY])
def test_entry_behaves_as_documented(results, index):
    r = results[index]
    if r.entry.corrected:
        # an erratum: wrong as written by a clear margin, right once corrected
        assert r.error > 1e-3, f"{_id(r.entry)} is listed as wrong but errs by only {r.error:.1e}"
        assert r.corrected_error <= errata.HOLDS_TOL
    else:
        assert r.error <= errata.HOLDS_TOL
    assert consistent(r)


def test_every_text_is_covered(results):
    assert {r.entry.text for r in results} == set(errata.TEXTS)
    assert sum(bool(r.entry.corrected) for r in results) >= 10  # the texts have several mistakes


def test_doc_is_the_generated_table(results):
    doc = (ROOT / "docs" / "ERRATA.md").read_text()
    assert doc.strip() == errata.render_markdown(results).strip(), (
        "docs/ERRATA.md is stale: regenerate it with `fbackprop errata --markdown > docs/ERRATA.md`")


def test_readme_links_the_table():
    assert "docs/ERRATA.md" in (ROOT / "README.md").read_text()


def test_cli_text_and_json(capsys):
    assert cli.main(["errata", "--text", "Bradbury", "--errata-only"]) == 0
    out = capsys.readouterr().out
    assert "eq. (38)" in out and "DOES NOT HOLD" in out and "eq. (6)" not in out
    assert cli.main(["errata", "--text", "Kamper", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and all(e["text"] == "Kamper" for e in report["equations"])


def test_cli_fails_when_a_correction_is_wrong(capsys, monkeypatch):
    bad = errata.Entry("Kamper", "planted", "1 = 2", "2 = 3", "",
                       lambda rng: errata.Values(1.0, 2.0, 3.0))
    monkeypatch.setattr(errata, "REGISTRY", [bad])
    assert cli.main(["errata"]) == 1
    assert "UNEXPECTED" in capsys.readouterr().out


def test_discrepancy_reports_shape_mismatch():
    import numpy as np

    err, detail = errata.discrepancy(np.zeros((2, 3)), np.zeros((2, 4)))
    assert err == float("inf") and "shape" in detail
