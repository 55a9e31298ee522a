"""Hostile text in the model card and in a publish: config strings are shown, never interpreted (issue 39, item 7).

A card quotes names, descriptions and metadata written by whoever trained or exported the net; a `--revision` or
repo id lands in the card's code snippets; a supernet folder may hold symlinks. None of these may turn into HTML,
a markdown link, a second code block or Python code run by a reader who pastes the snippet, nor pull files from
outside the folder into a public repo.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from test_hub_publish import REPO, REPORT, tiny  # noqa: F401 (tiny: the module-scoped saved tiny model)

from zoo import create_model
from zoo.cli import main as zoo_main
from zoo.model_card import render_card

HOSTILE = "<img src=x onerror=alert(1)> [click](https://evil.example) **bold** `tick` | cell\n# heading ```"


def _card(text: str) -> str:
    """The bundled cpu net's card with ``text`` in every free-text field its metadata and report can hold."""
    info = create_model("fmnist_proxyless_cpu").info
    metrics = {**info.metrics, "source": text, "search": {"space": text, text: 1, "list": [text]}}
    metrics.pop("specialized", None)
    info = dataclasses.replace(info, source=text, categories=(text, *info.categories[1:]), metrics=metrics)
    report = {**REPORT, "env": {**REPORT["env"], "cpu": text}, "unavailable": {"tensorrt": text}, "_path": "r.json"}
    report["results"] = [{**r, "model": info.name} for r in REPORT["results"]]
    return render_card(info, repo_id=REPO, weights_sha256="0" * 64, reports=[report])


def _shape(card: str) -> list[str]:
    """What markdown builds the card from: each line's kind (heading, fence, list item, code) and its table cells
    (outside code blocks, where a ``|`` is only text)."""
    shape, fenced = [], False
    for line in card.splitlines():
        fenced ^= line.startswith("```")
        if line.startswith("```") or fenced:
            shape.append("```" if line.startswith("```") else "code")
            continue
        kind, cells = re.match(r"#+ |- |\||", line).group(0), len(re.split(r"(?<!\\)[|]", line))
        shape.append(f"{kind}{cells}")
    return shape


def _text(card: str) -> str:
    """The card's running text: fenced blocks and inline code spans (shown verbatim by markdown) taken out."""
    card = re.sub(r"^```.*?^```", "", card, flags=re.S | re.M)
    return re.sub(r"(`+).*?(?<!`)\1(?!`)", "", card)


def test_card_shows_markup_from_config_strings_as_text() -> None:
    card, plain = _card(HOSTILE), _card("plain words")
    assert _shape(card) == _shape(plain)  # no heading, fence, line or table cell added by a value
    text = _text(card)
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "[click](" not in text and "\\[click\\](https://evil.example)" in text
    assert "**bold**" not in text and "\\*\\*bold\\*\\*" in text


def test_card_snippets_quote_what_they_embed() -> None:
    """render_card is public: a revision or repo id it is handed cannot break out of the snippet's string."""
    info = create_model("fmnist_proxyless_cpu").info
    revision = 'v1", pretrained=False); import os; os.system("id"); print("'  # parses when pasted raw
    card = render_card(info, repo_id=REPO, weights_sha256="0" * 64, revision=revision, has_onnx=True)
    snippets = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(snippets) == 3
    for code in snippets:
        tree = ast.parse(code)  # parsed, never run
        imported = {a.name for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom) for a in node.names}
        assert "os" not in imported and 'os.system("id")' not in code.replace(revision, "")
    assert f"hf-hub:{REPO}@{revision}" in card.replace('\\"', '"')  # the revision is there, as string content


@pytest.mark.parametrize("revision", ['v1"); import os; ("', "a b", "-x", "a..b", "v1.lock", "../main", "x\ny"])
def test_publish_refuses_a_revision_that_is_not_a_branch(
    tiny: dict,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    revision: str,
) -> None:
    out = tmp_path / "repo"
    argv = ["publish", str(tiny["dir"]), "--repo-id", REPO, f"--revision={revision}", "--no-onnx", "--dry-run"]
    assert zoo_main([*argv, str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --revision {revision!r}: expected a branch name") and len(err.splitlines()) == 1
    assert not out.exists()


def test_publish_refuses_a_repo_id_with_other_characters(tiny: dict, tmp_path: Path, capsys) -> None:  # noqa: F811
    out = tmp_path / "repo"
    argv = ["publish", str(tiny["dir"]), "--repo-id", 'org/x", "y', "--no-onnx", "--dry-run", str(out)]
    assert zoo_main(argv) == 2
    assert "--repo-id 'org/x\", \"y': expected ORG/REPO" in capsys.readouterr().err and not out.exists()
