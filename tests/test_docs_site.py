"""The documentation site (mkdocs.yml, pages = docs/sections/*.md + the API reference) builds strictly, offline.

A link to a missing file or heading, a page missing from the nav, or a docstring the API reference cannot
read fails here, with the fix for each printed by ``docs/check_site.py`` (run it by hand the same way).
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOWHERE = "http://127.0.0.1:9"      # the discard port: any attempt to reach the network fails at once


def _check_site():
    spec = importlib.util.spec_from_file_location("check_site", ROOT / "docs" / "check_site.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_site_builds_strictly_without_the_network(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", NO_PROXY="", no_proxy="")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[var] = NOWHERE
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "check_site.py"), "--site-dir", str(site)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]

    home = (site / "index.html").read_text(encoding="utf-8")
    assert 'src="screenshot.png"' in home
    assert (site / "screenshot.png").stat().st_size > 10_000
    # the API reference is rendered from the docstrings: the public names, with their own words
    core = (site / "api" / "core.html").read_text(encoding="utf-8")
    assert "Visualizer" in core and "InputSpec" in core and "Springenberg" in core
    assert "ActivationMaximizer" in (site / "api" / "atlas.html").read_text(encoding="utf-8")
    for page in (site / "api").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<blockquote>" not in text, f"{page.name}: a docstring's >>> lines rendered as quotes, not code"
        assert ":class:<code>" not in text and ":meth:<code>" not in text, f"{page.name}: a Sphinx role shown raw"
    # offline for the reader too: no page asks a web font or script server
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in text and "fonts.gstatic.com" not in text, page


def test_broken_links_are_explained_with_their_fix():
    """The failure message of the build names the page where a stray anchor lives and the path to write."""
    cs = _check_site()
    fix = cs.advice("Doc file 'sections/60-cli.md' contains a link '#keys', but there is no such anchor on this page.")
    assert "(50-gui.md#keys)" in fix and "sections/50-gui.md" in fix
    fix = cs.advice("Doc file 'sections/20-core.md' contains a link 'docs/images/saliency_cat.png', but the target "
                    "'sections/docs/images/saliency_cat.png' is not found among documentation files.")
    assert "(../images/saliency_cat.png)" in fix
    fix = cs.advice("The following pages exist in the docs directory, but are not included in the \"nav\" "
                    "configuration:\n  - sections/75-x.md")
    assert "mkdocs.yml" in fix
    assert "id 'no-such-heading'" in cs.advice(
        "Doc file 'sections/60-cli.md' contains a link '50-gui.md#no-such-heading', but the doc "
        "'sections/50-gui.md' does not contain an anchor '#no-such-heading'.")


def test_every_benchmark_the_docs_name_exists():
    """A figure is traceable only if the script that printed it is still there (renamed? update the page)."""
    import re
    named = {m for page in (ROOT / "docs" / "sections").glob("*.md")
             for m in re.findall(r"benchmarks/[\w-]+\.py", page.read_text(encoding="utf-8"))}
    assert named, "the speed page names no benchmark script"
    missing = sorted(n for n in named if not (ROOT / n).is_file())
    assert not missing, f"the docs quote figures of scripts that do not exist: {missing}"
