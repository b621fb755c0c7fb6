"""The README as a user meets it: every Python block runs as pasted, top to bottom, in one Python
process; every ``fbackprop`` command of its shell blocks parses (the flags exist and take the
values given); and the lists and numbers it and docs/ECOSYSTEM.md state are the code's own (the
model families checked, the tolerances, the notebooks)."""
import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from fbackprop import cli, suite
from fbackprop.commands import check as check_command
from fbackprop.gradcheck import TOLERANCE

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(text: str, language: str) -> list:
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", text, flags=re.S | re.M)


# After the blocks, in the same process: the claims their comments make.
CLAIMS = """
import json, jax, jax.numpy as jnp
first = max(jax.tree.leaves(jax.tree.map(lambda m, r: float(jnp.max(jnp.abs(m - r))), manual, ref)))
print("CLAIMS " + json.dumps({
    "first_example_error": first,
    "dag_ok": bool(fb.check(net, "mse", params, x, y).ok),
    "lm_failing": list(lm_report.failing_layers),
    "report_ok": bool(report.ok),
    "rules_ok": bool(rules.ok),
    "logits_shape": list(logits.shape),
    "classes_agree": bool((classes == logits.argmax(-1)).all()),
}))
"""


def test_every_python_block_runs_as_pasted_in_one_process(tmp_path):
    code = "\n\n".join(blocks(README, "python")) + CLAIMS
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    claims = json.loads(proc.stdout.split("CLAIMS ")[-1])
    assert claims["first_example_error"] < 1e-15  # the comment: ~1e-17
    assert claims["dag_ok"] and claims["report_ok"] and claims["lm_failing"] == []
    assert claims["rules_ok"]
    assert claims["logits_shape"] == [359, 10] and claims["classes_agree"]


def _commands(block: str):
    """Each ``fbackprop …`` command of a shell block, as its argument list after the name."""
    for line in block.splitlines():
        line = line.split(" #")[0].strip().rstrip("&").strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split("&&"):
            words = shlex.split(part)
            if words and pathlib.PurePath(words[0]).name == "fbackprop":
                yield words[1:]


def test_every_fbackprop_command_in_the_readme_parses():
    found = [argv for block in blocks(README, "bash") for argv in _commands(block)]
    assert len(found) >= 10, found
    for argv in found:
        cli.build_parser().parse_args(argv)  # argparse exits (status 2) on a bad flag or value


DOCS = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md")}


@pytest.mark.parametrize("name", ["README.md", "CHECKING.md"])
def test_the_check_command_line_the_docs_show_lists_every_family(name):
    text = (README if name == "README.md" else DOCS[name]).replace("\n", " ")
    choices = re.search(r"fbackprop check \[--model ([a-z|]+)\]", text)
    assert choices.group(1).split("|") == [*check_command.MODELS, "all"]


def test_the_train_options_training_md_lists_are_the_commands():
    from fbackprop.commands.train import _DATA_NAMES
    from fbackprop.training import MODELS

    text = DOCS["TRAINING.md"].replace("\n", " ")
    text = text[text.index("Options: `--model"):]
    assert re.search(r"Options: `--model ([a-z|]+) ", text).group(1).split("|") == list(MODELS)
    data = re.search(r" --data ([a-z0-9|:A-Z]+) ", text).group(1).split("|")
    assert data == [*_DATA_NAMES, "text:PATH"]


def test_the_model_families_the_readme_lists_are_those_checked():
    listed = re.search(r"for the\s+families ([a-z, ]+) and ([a-z]+)\)", README)
    families = {*listed.group(1).split(", "), listed.group(2)}
    assert families == {c.model for c in suite.model_configs()}


def test_the_tolerances_the_readme_states_are_the_checkers():
    rows = dict(re.findall(r"^\| (float\d\d)[^|]*\| ([0-9e.-]+) \|$", README, flags=re.M))
    assert {k: float(v) for k, v in rows.items()} == TOLERANCE


WORDS = {"three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def test_the_notebooks_the_docs_count_and_name_are_those_in_notebooks():
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    ecosystem = (ROOT / "docs" / "ECOSYSTEM.md").read_text(encoding="utf-8")
    count = re.search(r"holds (\w+) notebooks", ecosystem).group(1)
    assert WORDS[count] == len(notebooks)
    layout = README[README.index("## Layout"):]
    assert all(name in layout for name in notebooks), notebooks


@pytest.mark.parametrize("argv", [["train", "--modle", "mlp"], ["train", "--epochs", "many"]])
def test_a_command_with_a_bad_flag_does_not_parse(argv):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(argv)
