"""The recipe driver every run.sh is built on (recipes/common/driver.sh): one option parser whose --help is generated
from the option table, paths relative to the caller's directory, the default experiment folder, the train stage's
command (torchrun for --nproc, shown by --print-train rather than launched), missing tools named in one line, and
the train stage's seconds in EXP/RUN/train_seconds.txt. Tried on a toy recipe and on every real one."""
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = ["wsj", "scribblelens", "cifar10", "vqvae", "imagenet100", "units", "maskgit"]
COMMON_OPTIONS = ["--mini", "--data", "--config", "--size", "--row-overrides", "--seed", "--nproc", "--torchrun", "--threads", "--stage",
                  "--stop-stage", "--exp", "--print-exp", "--print-train", "--force", "--help"]

TOY = """#!/usr/bin/env bash
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/driver.sh"
recipe_about="Toy recipe: one row on a folder."
config=row
tool=true
option --tool text:COMMAND "a command the prepare stage needs"
stage prepare "checks the data"
stage train
stage_prepare() { need_tool "$tool" "apt-get install $tool"; echo "prepared $data"; }
recipe_setup() { mini_data=$repo/data/toy; }
recipe_run_setup() { recipe_overrides=("data.root=$data"); }
driver_main "$@"
"""


@pytest.fixture
def toy(tmp_path):
    """A recipe of one file and its conf/ folder, beside the real recipes/common."""
    recipe = tmp_path / "repo" / "recipes" / "toy"
    (recipe / "conf").mkdir(parents=True)
    (tmp_path / "repo" / "recipes" / "common").symlink_to(REPO / "recipes" / "common")
    (recipe / "run.sh").write_text(TOY)
    (recipe / "conf" / "row.yaml").write_text("task: handwriting_ae\ntrain:\n  steps: 1000\n")
    (recipe / "conf" / "mini.overrides").write_text("*: train.steps=10\nrow: train.lr=1.0e-3\n")
    (tmp_path / "caller").mkdir()
    return recipe / "run.sh"


def run(script, *args, cwd=REPO, **env):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=environment)


def error_line(result):
    assert result.returncode == 1 and result.stdout == "", result
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr.strip()


def test_mistakes_are_one_line(toy):
    assert error_line(run(toy, "--mini", "--bogus")) == "error: run.sh: unknown option --bogus (see --help)"
    assert error_line(run(toy, "--mini", "--seed")) == "error: run.sh: --seed needs a value (see --help)"
    assert error_line(run(toy, "--mini", "--seed", "x")) == \
        "error: run.sh: --seed must be a non-negative integer, got x"
    assert error_line(run(toy, "--mini", "--nproc", "0")) == "error: run.sh: --nproc must be a positive number, got 0"
    assert error_line(run(toy, "--mini", "--size", "big")) == "error: run.sh: --size must be cpu or paper, got big"
    assert error_line(run(toy, "--mini", "--stage", "eval")) == \
        "error: run.sh: --stage must be a stage number 0-1 or a name (prepare train), got eval"
    assert error_line(run(toy, "--mini", "--config", "nope")) == "error: run.sh: no conf/nope.yaml; configs: row"
    assert error_line(run(toy, "--mini", "--data", "x")) == "error: run.sh: give --mini or --data DIR, not both"
    assert error_line(run(toy)).startswith("error: run.sh: give --mini (the built data set")


def test_help_is_generated_from_the_option_table(toy):
    result = run(toy, "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Toy recipe: one row on a folder.\n\n"
                                    "usage: recipes/toy/run.sh (--mini | --data DIR)")
    for option in COMMON_OPTIONS + ["--tool COMMAND"]:
        assert re.search(rf"^  (-h, )?{option}\b", result.stdout, re.M), option
    assert re.search(r"^  0 prepare +checks the data$", result.stdout, re.M)
    assert re.search(r"^  1 train +seqvq train", result.stdout, re.M)
    assert max(map(len, result.stdout.splitlines())) <= 120
    unwrapped = re.sub(r"\n {26}", " ", result.stdout)
    assert re.search(r"^  --seed N .*\(default: 0\)$", unwrapped, re.M)
    assert re.search(r"^  --threads N .*\(default: 1\)$", unwrapped, re.M)  # OMP_NUM_THREADS=1 here


def test_paths_are_the_callers_and_the_default_exp_is_keyed_by_the_data(toy, tmp_path):
    repo, caller = tmp_path / "repo", tmp_path / "caller"
    assert run(toy, "--mini", "--print-exp").stdout == f"{repo}/exp/toy/mini\n"
    assert run(toy, "--data", "d", "--exp", "runs/mine", "--print-exp", cwd=caller).stdout == f"{caller}/runs/mine\n"
    keyed = run(toy, "--data", "./d/", "--print-exp", cwd=caller).stdout
    assert re.fullmatch(rf"{repo}/exp/toy/d_[0-9a-f]{{8}}\n", keyed)
    assert keyed == run(toy, "--data", caller / "d", "--print-exp").stdout
    assert keyed != run(toy, "--data", tmp_path / "d", "--print-exp").stdout  # another folder of the same name


def test_print_train_shows_the_resolved_command(toy, tmp_path):
    conf, exp = toy.parent / "conf" / "row.yaml", tmp_path / "repo" / "exp" / "toy" / "mini"
    command = f"-m seqvq.cli train {conf}"
    assert run(toy, "--mini", "--print-train", "--", "train.lr=0.5").stdout == \
        f"OMP_NUM_THREADS=1 python3 {command} train.steps=10 train.lr=1.0e-3 data.root={tmp_path}/repo/data/toy " \
        f"train.threads=1 train.seed=0 train.lr=0.5 --exp-dir {exp}/row\n"
    paper = run(toy, "--mini", "--size", "paper", "--seed", "2", "--threads", "3", "--force", "--print-train").stdout
    assert paper == f"OMP_NUM_THREADS=3 python3 {command} data.root={tmp_path}/repo/data/toy train.threads=3 " \
                    f"train.seed=2 --exp-dir {exp}/row_seed2 --force\n"
    (toy.parent / "conf" / "more.overrides").write_text("*: train.steps=20\nrow: train.lr=0.1\n")
    more = run(toy, "--mini", "--row-overrides", toy.parent / "conf" / "more.overrides", "--print-train").stdout
    assert f"train.steps=10 train.lr=1.0e-3 train.steps=20 train.lr=0.1 data.root=" in more  # after the cpu lines
    (toy.parent / "conf" / "bad.overrides").write_text("nope: train.lr=0.1\n")
    assert "bad.overrides:1: no config nope.yaml" in error_line(
        run(toy, "--mini", "--row-overrides", toy.parent / "conf" / "bad.overrides", "--print-train"))
    ddp = run(toy, "--mini", "--nproc", "4", "--print-train").stdout
    assert ddp.startswith(f"OMP_NUM_THREADS=1 python3 -m torch.distributed.run --standalone --nproc-per-node 4 "
                          f"{command} ")
    nodes = run(toy, "--mini", "--nproc", "2", "--torchrun", "--nnodes 2 --rdzv-endpoint host:29400", "--print-train")
    assert nodes.stdout.startswith("OMP_NUM_THREADS=1 python3 -m torch.distributed.run --nnodes 2 --rdzv-endpoint "
                                   f"host:29400 --nproc-per-node 2 {command} ")


def test_a_missing_tool_is_named_with_how_to_install_it(toy):
    assert run(toy, "--mini", "--stage", "prepare", "--stop-stage", "prepare").stdout.startswith("prepared ")
    result = run(toy, "--mini", "--stop-stage", "0", "--tool", "no-such-tool")
    assert error_line(result) == "error: run.sh: no-such-tool is missing; install it with: apt-get install " \
                                 "no-such-tool (or bash .ci/install.sh)"


def test_train_seconds_are_those_of_training(toy, tmp_path):
    """A call that trains writes EXP/RUN/train_seconds.txt; one that finds the run trained leaves it as it is."""
    fake = tmp_path / "python3"  # `seqvq train` that writes a checkpoint unless one is there; anything else runs
    fake.write_text('#!/usr/bin/env bash\nif [ "$2" = seqvq.cli ]; then\n'
                    '  run=${@: -1}; [ -f "$run/checkpoints/last.pt" ] && exit 0\n'
                    '  mkdir -p "$run/checkpoints" && touch "$run/checkpoints/last.pt"; exit 0\nfi\n'
                    'exec python3 "$@"\n')
    fake.chmod(0o755)
    exp = tmp_path / "exp"
    first = run(toy, "--mini", "--stage", "train", "--exp", exp, PYTHON=str(fake))
    assert first.returncode == 0, first.stderr
    seconds = (exp / "row" / "train_seconds.txt").read_text().strip()
    assert re.search(rf"row trained in {seconds} s \(in all {seconds} s", first.stdout), first.stdout
    (exp / "row" / "train_seconds.txt").write_text("3600\n")
    again = run(toy, "--mini", "--stage", "train", "--exp", exp, PYTHON=str(fake))
    assert again.returncode == 0 and "trained in" not in again.stdout
    assert (exp / "row" / "train_seconds.txt").read_text() == "3600\n"


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_has_the_common_options(recipe):
    script = REPO / "recipes" / recipe / "run.sh"
    result = run(script, "--help")
    assert result.returncode == 0 and result.stderr == ""
    for option in COMMON_OPTIONS:
        assert re.search(rf"^  (-h, )?{option}\b", result.stdout, re.M), (recipe, option)
    assert error_line(run(script, "--mini", "--bogus")) == "error: run.sh: unknown option --bogus (see --help)"
    command = run(script, "--mini", "--nproc", "2", "--print-train").stdout
    assert " -m torch.distributed.run --standalone --nproc-per-node 2 -m seqvq.cli train " in command


TOY_TABLE = """#!/usr/bin/env bash
# Toy table: every row of the toy recipe.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common/table_driver.sh"
rows="row:2 other"
table_main "$@"
"""
TOY_EVALUATE = """
stage evaluate "writes EXP/RUN/eval/figures.json"
stage_evaluate() { mkdir -p "$exp/$run/eval" && echo '{}' > "$exp/$run/eval/figures.json"; }
driver_main "$@"
"""


@pytest.fixture
def toy_table(toy, tmp_path):
    """The toy recipe with an evaluate stage and a second row, its table script, and a python3 whose `seqvq train`
    writes a checkpoint and logs its command line, and whose table.py prints its arguments."""
    toy.write_text(TOY.replace('driver_main "$@"\n', TOY_EVALUATE))
    (toy.parent / "conf" / "other.yaml").write_text("task: handwriting_ae\n")
    (toy.parent / "table.sh").write_text(TOY_TABLE)
    fake = tmp_path / "python3"
    fake.write_text('#!/usr/bin/env bash\nif [ "$2" = seqvq.cli ]; then\n  run=${@: -1}\n'
                    '  echo "train ${run##*/} $*" >> "$(dirname "$run")/trained.txt"\n'
                    '  mkdir -p "$run/checkpoints" && touch "$run/checkpoints/last.pt"; exit 0\nfi\n'
                    'if [[ $1 == */table.py ]]; then echo "table.py ${*:2}"; exit 0; fi\nexec python3 "$@"\n')
    fake.chmod(0o755)
    return toy.parent / "table.sh", str(fake)


def test_a_table_script_trains_every_seed_of_every_row_once_through_run_sh(toy_table, tmp_path):
    table, fake = toy_table
    exp = tmp_path / "exp"
    result = run(table, "--mini", "--exp", exp, "--jobs", "1", "--size", "paper", "--", "train.lr=0.5", PYTHON=fake)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("prepared ") == 1  # the data stages once, before every run
    trained = (exp / "trained.txt").read_text().splitlines()
    assert [line.split()[1] for line in trained] == ["row", "other", "row_seed1"]  # seed-major
    threads = len(os.sched_getaffinity(0))  # cores / jobs
    assert all(f"train.threads={threads} " in line and line.endswith(" train.lr=0.5 --exp-dir " + str(exp / name))
               for line, name in zip(trained, ["row", "other", "row_seed1"]))
    assert "train.steps=10" not in trained[0]  # --size paper went to run.sh
    assert re.search(r"^table\.py toy \S+ --rows row:2 other --seeds 1 --note Command: `bash recipes/toy/table\.sh "
                     r"--mini .*`; 0 min wall time .* 1 runs at a time with \d+ thread\(s\) each\.$",
                     result.stdout, re.M), result.stdout
    again = run(table, "--mini", "--exp", exp, "--rows", "row:3 other", "--threads", "1", PYTHON=fake)
    assert "--note Command: `bash recipes/toy/table.sh --mini --exp " in again.stdout  # a command to paste:
    assert " --rows 'row:3 other' --threads 1`" in again.stdout                       # the list quoted
    assert "table.sh: row already evaluated" in again.stdout and "table.sh: row_seed1 already evaluated" in again.stdout
    trained = (exp / "trained.txt").read_text().splitlines()
    assert len(trained) == 4 and trained[3].split()[1] == "row_seed2" and "train.threads=1 " in trained[3]


def test_a_table_scripts_help_and_mistakes(toy_table, tmp_path):
    table, fake = toy_table
    result = run(table, "--help")
    assert result.returncode == 0 and result.stdout.startswith("Toy table: every row of the toy recipe.\n\nOptions")
    for option in ["--mini | --data PATH", "--rows", "--seeds N", "--jobs N", "--threads N", "--exp DIR",
                   "--table NAME", "--table-only", "--force", "-- key=value"]:
        assert f"\n  {option}" in result.stdout, option
    assert "--groups" not in result.stdout  # only a table with a group option has it
    assert error_line(run(table)) == "error: table.sh: give --mini or --data PATH (or --table-only --exp DIR)"
    assert error_line(run(table, "--mini", "--seeds", "0")) == "error: table.sh: --seeds takes a count >= 1, got '0'"
    assert error_line(run(table, "--mini", "--threads", "x")) == "error: table.sh: --threads takes a count >= 1, got 'x'"
    assert error_line(run(table, "--mini", "--groups", "a")) == "error: table.sh: unknown option --groups (see --help)"
    assert error_line(run(table, "--table-only")) == "error: table.sh: --table-only needs --exp DIR"
    assert error_line(run(table, "--mini", "--table", "a/b")).startswith("error: table.sh: --table takes a file name")
    exp = tmp_path / "exp"
    assert error_line(run(table, "--mini", "--exp", exp, "--rows", "row nope", PYTHON=fake)) == \
        "error: run.sh: no conf/nope.yaml; configs: other row"
    assert not exp.exists()  # refused before the data stages
    assert error_line(run(table, "--mini", "--exp", exp, "--units", "x", PYTHON=fake)) == \
        "error: run.sh: unknown option --units (see --help)"  # another option goes to run.sh, which checks it


def test_a_table_whose_rows_are_values_of_a_run_option(toy_table, tmp_path):
    """row_option: each row is run.sh --k ROW (one config, the run folder named by the recipe), the stages before
    first_run_stage run once, and table.py gets the rows' run folders."""
    table, fake = toy_table
    toy = table.parent / "run.sh"
    toy.write_text(toy.read_text().replace('recipe_setup() { mini_data=$repo/data/toy; }',
                                           'k=1\noption --k text:K "a row"\n'
                                           'recipe_setup() { mini_data=$repo/data/toy; run_suffix=_k$k; }'))
    table.write_text(TOY_TABLE.replace('rows="row:2 other"', 'rows="5 7:2"\nrow_option=--k first_run_stage=train'))
    exp = tmp_path / "exp"
    result = run(table, "--mini", "--exp", exp, "--jobs", "1", PYTHON=fake)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("prepared ") == 1
    assert [line.split()[1] for line in (exp / "trained.txt").read_text().splitlines()] == \
        ["row_k5", "row_k7", "row_k7_seed1"]
    assert re.search(r"^table\.py toy \S+ --rows row_k5:1 row_k7:2 --seeds 1 ", result.stdout, re.M), result.stdout
    tabulated = run(table, "--table-only", "--exp", exp, "--rows", "7:2", "--mini", PYTHON=fake)
    assert tabulated.stdout == f"table.py toy {exp} --rows row_k7:2 --seeds 1\n", tabulated  # the row's folder
    assert error_line(run(table, "--table-only", "--exp", exp, "--rows", "7")) == "error: table.sh: --table-only " \
        "--rows needs --mini or --data PATH too (run.sh names the runs of this table)"
