"""The errata table: every equation behaves as the table says, by a clear margin, and
docs/ERRATA.md is the table the code produces."""
import json
import pathlib

import numpy as np
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
        # an erratum, or a debatable row whose correction is the intended reading: wrong as
        # written (read literally) by a clear margin, right once corrected
        assert r.error > 1e-3, f"{_id(r.entry)} is listed as wrong but errs by only {r.error:.1e}"
        assert r.corrected_error <= errata.HOLDS_TOL
    else:
        assert r.error <= errata.HOLDS_TOL
    assert consistent(r)


def test_every_text_is_covered(results):
    assert {r.entry.text for r in results} == set(errata.TEXTS)
    n_fail = sum(r.status == errata.FAILS for r in results)
    assert n_fail >= 10  # the texts have several mistakes


def test_headline_counts_the_rows_that_fail(results):
    fail = [r for r in results if not r.holds and not r.entry.debatable]
    debatable = [r for r in results if r.entry.debatable]
    assert errata.counts(results) == {errata.FAILS: len(fail), errata.DEBATABLE: len(debatable),
                                      errata.HOLDS: len(results) - len(fail) - len(debatable)}
    assert debatable, "expected some debatable rows (conventions, not mistakes)"
    text = errata.render_text(results).splitlines()[-1]
    assert (f"{len(results)} equations checked against jax.grad: {len(fail)} do not hold as "
            f"written, {len(debatable)} debatable") in text
    markdown = errata.render_markdown(results)
    assert f"**{len(fail)} do not hold as written**, {len(debatable)} debatable" in markdown


def test_debatable_rows_render_as_debatable(results):
    r = next(r for r in results if r.entry.debatable)
    assert r.status == errata.DEBATABLE and not r.holds
    text = errata.render_text([r])
    assert f"{r.entry.where}: debatable" in text and "DOES NOT HOLD" not in text
    assert "intended:" in text and r.entry.note in text
    row = next(line for line in errata.render_markdown([r]).splitlines()
               if line.startswith(f"| {r.entry.where} |"))
    assert "| debatable |" in row and "**no**" not in row
    assert r.as_dict()["status"] == "debatable" and r.as_dict()["debatable"] is True


def test_debatable_entry_needs_its_intended_reading():
    with pytest.raises(ValueError, match="debatable"):
        errata.core.equation("Kamper", "planted", "1 = 2", debatable=True, note="a convention")


def test_doc_is_the_generated_table(results):
    doc = (ROOT / "docs" / "ERRATA.md").read_text()
    assert doc.strip() == errata.render_markdown(results).strip(), (
        "docs/ERRATA.md is stale: regenerate it with "
        "`fbackprop errata --markdown > docs/ERRATA.md`")


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


def test_discrepancy_refuses_a_shape_mismatch(results):
    # a check compares values; arrays of different shapes are a bug in the check, not an erratum
    with pytest.raises(ValueError, match=r"expected shape \(2, 4\).*received \(2, 3\)"):
        errata.discrepancy(np.zeros((2, 3)), np.zeros((2, 4)))
    assert all(np.isfinite(r.error) for r in results)
