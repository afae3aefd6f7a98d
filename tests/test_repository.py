"""The README's quick-start test command is what CI runs (so the two cannot drift apart)."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def quick_start_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_quick_start_has_two_commands_and_ci_runs_the_test_one_verbatim():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command.strip() in ci_lines


def test_recipe_scripts_print_error_lines_only_for_errors():
    """In the recipes' shell scripts an ``error: ...`` line goes to stderr and the script exits 1 right after it;
    progress lines carry no ``error:`` prefix."""
    offenders = []
    for script in sorted(ROOT.glob("recipes/**/*.sh")):
        lines = script.read_text().splitlines()
        for number, line in enumerate(lines):
            if 'echo "error:' not in line:
                continue
            statement = line
            while statement.rstrip().endswith("\\") and number + 1 < len(lines):
                number += 1
                statement += lines[number]
            following = statement + (lines[number + 1] if number + 1 < len(lines) else "")
            if ">&2" not in statement or not re.search(r"exit 1|usage", following):
                offenders.append(f"{script.relative_to(ROOT)}:{number + 1}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
