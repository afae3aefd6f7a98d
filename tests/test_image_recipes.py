"""The image recipes on the shared scripts (recipes/common/image_ae_run.sh on the recipe driver; table3.sh on the
table driver and table.py): run.sh trains one row (--config, --seed), table3.sh every row; argument checks and the
markdown tables."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np

from seqvq.data.cifar import write_cifar_batches

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def write_metrics(folder: Path, mse: float) -> None:
    (folder / "eval").mkdir(parents=True)
    metrics = {"mse": mse, "code_perplexity": 345.67, "codes_used": 512.0, "images": 293.0}
    (folder / "eval" / "figures.json").write_text(json.dumps(metrics))


def test_help_is_the_recipes_own():
    for recipe, first in [("cifar10", "CIFAR-10 recipe"), ("vqvae", "VQ-VAE recipe")]:
        result = run(f"recipes/{recipe}/run.sh", "--help")
        assert result.returncode == 0 and result.stdout.startswith(first)
        assert ("\n  --bottleneck 8x128|5x1024" in result.stdout) == (recipe == "cifar10")
    result = run("recipes/cifar10/table3.sh", "--help")
    assert result.returncode == 0 and result.stdout.startswith("Table III of Łańcucki et al. 2020")


def test_run_sh_refuses_bad_arguments_in_one_line():
    def error(*args):
        result = run(*args)
        assert result.returncode == 1 and result.stdout == "", result
        return result.stderr.strip()

    assert error("recipes/cifar10/run.sh", "--mini", "--bottleneck", "3x3") == \
        "error: run.sh: --bottleneck must be 8x128 or 5x1024, got 3x3"
    assert error("recipes/vqvae/run.sh", "--mini", "--bottleneck", "8x128") == \
        "error: run.sh: unknown option --bottleneck (see --help)"
    configs = sorted(p.stem for p in (REPO / "recipes" / "vqvae" / "conf").glob("*.yaml") if p.stem != "common")
    assert error("recipes/vqvae/run.sh", "--mini", "--config", "bn") == \
        f"error: run.sh: no conf/bn.yaml; configs: {' '.join(configs)}"
    assert error("recipes/cifar10/run.sh", "--mini", "--seed", "-1") == \
        "error: run.sh: --seed must be a non-negative integer, got -1"
    assert error("recipes/cifar10/run.sh").startswith("error: run.sh: give --mini (the built set of 32x32 photo "
                                                      "crops, data/mini_images) or --data CIFAR")
    assert error("recipes/cifar10/table3.sh") == \
        "error: table3.sh: give --mini or --data PATH (or --table-only --exp DIR)"
    assert error("recipes/vqvae/table3.sh", "--table-only") == "error: table3.sh: --table-only needs --exp DIR"


def test_tables(tmp_path):
    write_metrics(tmp_path / "l2", 0.0123)
    write_metrics(tmp_path / "l2_seed2", 0.0125)
    write_metrics(tmp_path / "vqvae_seed1", 0.02)
    header = ["| Method | MSE (1e-3) | Perplexity | Codes used |", "|---|---|---|---|"]
    footer = ["", "Test images: 293; MSE of the reconstruction in [0, 1] per sub-pixel."]
    result = run("recipes/vqvae/table3.sh", "--table-only", "--exp", str(tmp_path), "--rows", "vqvae l2")
    assert result.returncode == 0
    assert result.stdout.splitlines() == header + [
        "| VQVAE | not evaluated | | |", "| VQVAE + l2 | 12.30 | 345.7 | 512 |"] + footer
    # default rows: every evaluated row with its seeds, in the table's order
    result = run("recipes/vqvae/table3.sh", "--table-only", "--exp", str(tmp_path))
    assert result.stdout.splitlines() == header + [
        "| VQVAE (seed 1) | 20.00 | 345.7 | 512 |", "| VQVAE + l2 | 12.30 | 345.7 | 512 |",
        "| VQVAE + l2 (seed 2) | 12.50 | 345.7 | 512 |",
        "| VQVAE + l2, mean ± sd of 2 seeds | 12.40 ± 0.14 | 345.7 ± 0.0 | 512 ± 0 |"] + footer  # after a row's seeds
    result = run("recipes/vqvae/table3.sh", "--table-only", "--exp", str(tmp_path), "--rows", "l2_seed2")
    assert result.stdout.splitlines() == header + ["| VQVAE + l2 (seed 2) | 12.50 | 345.7 | 512 |"] + footer
    write_metrics(tmp_path / "cifar10" / "l2", 0.0123)  # a row of the vqvae table only
    result = run("recipes/cifar10/table3.sh", "--table-only", "--exp", str(tmp_path / "cifar10"))
    assert result.returncode == 0 and result.stdout.splitlines() == [  # no cifar10 row evaluated
        "| Model | BPD | Rec. BPD | Latent BPD | Unigram BPD | Pplx (mean over codebooks) | Codes used |",
        "|---|---|---|---|---|---|---|"]


def test_table3_trains_each_row_once_with_run_sh_and_a_seed_names_its_folder(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    write_cifar_batches(str(tmp_path / "data"), (images, np.zeros(6, np.int64)), (images[:2], np.zeros(2, np.int64)),
                        ["x"])
    exp = tmp_path / "exp"
    command = ["recipes/vqvae/table3.sh", "--data", str(tmp_path / "data"), "--exp", str(exp), "--rows", "vqvae:2",
               "--", "train.steps=1", "train.batch_size=2", "model.channels=8",
               "model.quantizer.codebook_size=4", "train.checkpoint_every=1", "train.eval_every=1"]
    result = run(*command, timeout=600)  # two trainings
    assert result.returncode == 0, result.stderr
    assert set(os.listdir(exp)) == {"vqvae", "vqvae_seed1", "logs"}
    assert int((exp / "vqvae_seed1" / "train_seconds.txt").read_text()) >= 0
    assert "seed: 1" in (exp / "vqvae_seed1" / "config.yaml").read_text()
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")][1:]
    assert [line.split(" | ")[0] for line in table] == ["| VQVAE", "| VQVAE (seed 1)", "| VQVAE, mean ± sd of 2 seeds"]
    assert "not evaluated" not in result.stdout
    result = run(*command)  # evaluated rows are not retrained
    assert result.returncode == 0 and "table3.sh: vqvae_seed1 already evaluated" in result.stdout
    assert "stage train" not in result.stdout


def test_default_exp_of_a_data_set_is_keyed_by_its_full_path(tmp_path):
    """Two data sets of the same name never share an experiment folder, in every image recipe."""
    for parent in ("a", "b"):
        (tmp_path / parent / "cifar-10-batches-py").mkdir(parents=True)
        for split in ("train", "val"):
            (tmp_path / parent / "digits" / split).mkdir(parents=True)
    for recipe, name, suffix in (("cifar10", "cifar-10-batches-py", "_8x128"), ("vqvae", "cifar-10-batches-py", ""),
                                 ("imagenet100", "digits", "")):  # imagenet100's run goes to EXP/resnet18/all
        exps = []
        for parent in ("a", "b"):
            result = run(f"recipes/{recipe}/run.sh", "--data", str(tmp_path / parent / name), "--print-exp")
            assert result.returncode == 0, result.stderr
            exps.append(result.stdout.strip())
        assert exps[0] != exps[1], recipe
        for exp in exps:
            assert exp.startswith(f"{REPO}/exp/{recipe}/{name}_") and exp.endswith(suffix), exp


def test_relative_paths_are_the_callers(tmp_path):
    """--data and --exp relative to the directory run.sh is called from, in every image recipe."""
    (tmp_path / "cifar-10-batches-py").mkdir()
    for split in ("train", "val"):
        (tmp_path / "digits" / split).mkdir(parents=True)
    for recipe, data in (("cifar10", "cifar-10-batches-py"), ("vqvae", "cifar-10-batches-py"),
                         ("imagenet100", "digits")):
        script = str(REPO / "recipes" / recipe / "run.sh")
        result = run(script, "--data", data, "--exp", "runs/mine", "--print-exp", cwd=tmp_path)
        assert result.returncode == 0 and result.stdout == f"{tmp_path}/runs/mine\n", (recipe, result)
        keyed = run(script, "--data", f"./{data}/", "--print-exp", cwd=tmp_path).stdout
        assert keyed == run(script, "--data", str(tmp_path / data), "--print-exp").stdout, recipe
