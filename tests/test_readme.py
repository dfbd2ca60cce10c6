"""The README is a first screen: what the tool is, the two commands, what they produce, links. `.ci/run` runs its
test command exactly; every link resolves; the configs are settings, not run logs (no commit hashes or dates: the
measured figures live in the generated documents)."""
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]


def _blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    main, tests = _blocks(readme)
    assert "python -m launch.reproduce --config=configs/default.py" in main
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert lines[-1].strip() == tests


def test_the_readme_is_one_screen_and_its_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 40
    links = re.findall(r"\]\(([^)#]+)", readme)
    assert "docs/USAGE.md" in links and "docs/RESULTS.md" in links
    assert [link for link in links if not (REPO / link).exists()] == []
    picture = REPO / next(link for link in links if link.endswith(".png"))
    assert picture.stat().st_size < 400_000


def test_configs_hold_settings_not_run_logs():
    found = []
    for path in sorted((REPO / "configs").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bcommit [0-9a-f]{7}|\b20\d\d-\d\d-\d\d\b", line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert found == []
