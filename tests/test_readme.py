"""README.md: generated from the docs' home page, short, with the exact test command CI runs and a
Python example that runs on the real pretrained network."""
import importlib.util
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _build_readme():
    spec = importlib.util.spec_from_file_location("build_readme", ROOT / "docs" / "build_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fenced(text: str, lang: str, after: str) -> str:
    """The first ```lang block after the heading ``after``."""
    m = re.search(rf"^## {re.escape(after)}\n.*?^```{lang}\n(.*?)^```", text, re.S | re.M)
    assert m, f"no ```{lang} block under '## {after}'"
    return m.group(1)


def test_readme_is_the_built_home_page():
    assert README.read_text(encoding="utf-8") == _build_readme().build(), (
        "README.md is out of date: edit docs/sections/00-top.md (or the nav of mkdocs.yml), then run "
        "python docs/build_readme.py")


def test_readme_is_short_and_links_into_the_docs():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for page in ["docs/sections/50-gui.md", "docs/sections/20-core.md", "docs/sections/80-benchmarks.md",
                 "docs/api/core.md"]:
        assert f"]({page}" in text, page
    for target in re.findall(r"\]\(([^)#\s]+)", text):      # every relative link resolves in the repository
        if not re.match(r"[a-z]+:", target):
            assert (ROOT / target).exists(), target


def test_readme_test_command_is_what_ci_runs():
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.startswith("pip install -e")]
    assert len(ci) == 1
    command = _fenced(README.read_text(encoding="utf-8"), "bash", "Run the tests").strip()
    assert command == "python3 -m venv .venv && . .venv/bin/activate && " + ci[0]


def test_readme_python_example_runs_on_the_real_network(realnet_env, tmp_path, monkeypatch):
    code = _fenced(README.read_text(encoding="utf-8"), "python", "From Python")
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 10
    from tests import realnet as rn
    shutil.copy(rn.photo_dir() / rn.PHOTOS["chelsea"], tmp_path / "chelsea.png")
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(code, "README.md (From Python)", "exec"), ns)
    assert ns["cat"] == 285 and ns["lm"].labels[285] == "Egyptian cat"
    assert tuple(ns["guided"].shape) == (1, 3, 224, 224) and tuple(ns["cam"].shape) == (1, 224, 224)
    import cv2
    picture = cv2.imread(str(tmp_path / "guided.png"))
    assert picture.shape == (224, 224, 3) and picture.std() > 5      # a picture, not a flat grey
