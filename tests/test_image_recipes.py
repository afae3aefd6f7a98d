"""The image recipes' shared scripts (recipes/common/image_ae_run.sh, image_ae_table.py) behind the thin
recipes/cifar10 and recipes/vqvae wrappers: argument checks and the markdown tables."""
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_help_is_the_wrappers_header():
    for recipe, first in [("cifar10", "CIFAR-10 recipe"), ("vqvae", "VQ-VAE recipe")]:
        result = run(f"recipes/{recipe}/run.sh", "--help")
        assert result.returncode == 0 and result.stdout.startswith(first)
        assert result.stdout.rstrip().endswith("Threads: OMP_NUM_THREADS (default 2 here).")


def test_bottleneck_is_an_option_of_cifar10_only():
    result = run("recipes/cifar10/run.sh", "--mini", "--bottleneck", "3x3")
    assert result.returncode == 1
    assert result.stderr.strip() == "run.sh: --bottleneck must be 8x128 or 5x1024 (Table III's columns), got 3x3"
    result = run("recipes/vqvae/run.sh", "--mini", "--bottleneck", "8x128")
    assert result.returncode == 1 and result.stderr.startswith("run.sh: unknown option --bottleneck")


def test_tables(tmp_path):
    (tmp_path / "l2" / "eval").mkdir(parents=True)
    metrics = {"mse": 0.0123, "perplexity": 345.67, "codes_used": 512.0, "images": 293.0}
    (tmp_path / "l2" / "eval" / "metrics.json").write_text(json.dumps(metrics))
    result = run("recipes/vqvae/table3.sh", str(tmp_path), "vqvae", "l2")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "| Method | MSE (1e-3) | Perplexity | Codes used |", "|---|---|---|---|",
        "| VQVAE | not evaluated | | |", "| VQVAE + l2 | 12.30 | 345.7 | 512 |", "",
        "Test images: 293; MSE of the reconstruction in [0, 1] per sub-pixel."]
    result = run("recipes/cifar10/table3.sh", str(tmp_path))  # default rows: the evaluated ones (none here)
    assert result.stdout.splitlines() == [
        "| Model | BPD | Rec. BPD | Latent BPD | Unigram BPD | Pplx (mean over codebooks) | Codes used |",
        "|---|---|---|---|---|---|---|"]
    result = run("recipes/cifar10/table3.sh")
    assert result.returncode == 1 and result.stdout.startswith("Print Table III of Łańcucki et al. 2020")
