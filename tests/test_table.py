"""recipes/common/table.py, the table writer of every recipe: the table over seeds (mean ± sd, seed counts) and the
curves figure. The image and classifier tables through their scripts: test_image_recipes.py,
test_classification_task.py."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "recipe_table", Path(__file__).parent.parent / "recipes" / "common" / "table.py")
writer = importlib.util.module_from_spec(spec)
sys.modules["recipe_table"] = writer  # dataclasses look their module up there
spec.loader.exec_module(writer)


def fake_run(directory: Path, dev_per: float, test_per: float, perplexity: float | None = None) -> None:
    vq = {} if perplexity is None else {"code_perplexity": perplexity, "codes_used": 2 * perplexity}
    for split, per in (("dev", dev_per), ("test", test_per)):
        (directory / f"decode_{split}").mkdir(parents=True)
        (directory / f"decode_{split}" / "figures.json").write_text(json.dumps({"per": per, "step": 20, **vq}))
    records = [{"step": step, "split": "dev", "per": dev_per + 20 - step, **vq} for step in (10, 20)]
    records.insert(1, {"step": 10, "split": "train", "per": 99.0})
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_mean_sd_over_seeds_and_missing_seeds(tmp_path, capsys):
    fake_run(tmp_path / "no_bottleneck", 11.0, 10.0)
    fake_run(tmp_path / "no_bottleneck_seed1", 12.0, 10.0)
    fake_run(tmp_path / "no_bottleneck_seed2", 13.0, 10.0)
    fake_run(tmp_path / "bn_ema", 14.0, 15.0, perplexity=100.0)  # seeds 1 and 2 not finished
    (tmp_path / "bn_ema_seed1").mkdir()
    writer.main(["wsj", str(tmp_path), "--rows", "no_bottleneck:3 bn_ema:3 vanilla_vq", "--note", "took 1 min"])
    table = (tmp_path / "table1.md").read_text()
    assert "| no bottleneck | 3/3 | 12.0 ± 1.0 | 10.0 ± 0.0 | N/A | N/A |" in table
    assert "| + BN + EMA | 1/3 | 14.0 | 15.0 | 100.0 | 200 |" in table
    assert "| vanilla VQ | 0/1 | N/A | N/A | N/A | N/A |" in table
    assert table.rstrip().endswith("took 1 min")
    assert table in capsys.readouterr().out
    figures = json.loads((tmp_path / "table1.json").read_text())
    assert figures["no_bottleneck"][2]["curves"]["per"] == [[10, 23.0], [20, 13.0]]  # dev records only
    assert (tmp_path / "table1_curves.png").stat().st_size > 10_000


def test_without_rows_every_row_with_an_evaluated_seed_0_is_tabulated_with_its_seeds(tmp_path, capsys):
    fake_run(tmp_path / "bn_ema", 14.0, 15.0)
    fake_run(tmp_path / "bn_ema_seed1", 16.0, 15.0)
    fake_run(tmp_path / "bn_ema_seed3", 99.0, 99.0)  # after a missing seed 2: not counted
    fake_run(tmp_path / "vanilla_vq_seed1", 99.0, 99.0)  # no seed 0: not a row of the table
    fake_run(tmp_path / "no_bottleneck_chars", 99.0, 99.0)  # another unit's run
    writer.main(["wsj", str(tmp_path), "--name", "all"])
    lines = [line for line in (tmp_path / "all.md").read_text().splitlines() if line.startswith("| ")][1:]
    assert lines == ["| + BN + EMA | 2/2 | 15.0 ± 1.4 | 15.0 ± 0.0 | N/A | N/A | N/A | N/A |  |"]


def test_units_suffix_selects_runs_and_columns_and_name_the_files(tmp_path):
    directory = tmp_path / "bn_chars"
    for split in ("dev", "test"):
        (directory / f"decode_{split}").mkdir(parents=True)
        (directory / f"decode_{split}" / "figures.json").write_text(json.dumps({"cer": 5.0, "wer": 20.0}))
    writer.main(["wsj", str(tmp_path), "--rows", "bn", "--suffix", "_chars", "--name", "chars"])
    table = (tmp_path / "chars.md").read_text()
    assert not (tmp_path / "table1.md").exists()
    assert "Dev CER (%) | Dev WER (%) | Test CER (%)" in table
    assert "| + BN | 1/1 | 5.0 | 20.0 | 5.0 | 20.0 |" in table


@pytest.mark.parametrize("rows", ["bn:0", "bn:x"])
def test_bad_rows_are_refused(tmp_path, rows):
    with pytest.raises(SystemExit, match="CONFIG:SEEDS"):
        writer.main(["wsj", str(tmp_path), "--rows", rows])


def test_decode_suffix_reads_the_other_evaluation_of_the_same_runs(tmp_path):
    fake_run(tmp_path / "no_bottleneck", 11.0, 10.0)
    live = tmp_path / "no_bottleneck" / "decode_dev_live"
    live.mkdir()
    (live / "figures.json").write_text(json.dumps({"per": 12.5}))
    (tmp_path / "no_bottleneck" / "decode_test_live").mkdir()
    (tmp_path / "no_bottleneck" / "decode_test_live" / "figures.json").write_text(json.dumps({"per": 9.5}))
    writer.main(["wsj", str(tmp_path), "--rows", "no_bottleneck", "--name", "live", "--decode-suffix", "_live"])
    assert "| no bottleneck | 1/1 | 12.5 | 9.5 | N/A | N/A |" in (tmp_path / "live.md").read_text()


def test_a_run_that_never_quantized_is_marked_in_every_layout(tmp_path, capsys):
    fake_run(tmp_path / "bn_ema", 14.0, 15.0, perplexity=1.0)
    figures = tmp_path / "bn_ema" / "decode_dev" / "figures.json"
    figures.write_text(json.dumps({**json.loads(figures.read_text()), "quantized": False}))
    writer.main(["wsj", str(tmp_path), "--rows", "bn_ema"])
    assert "| + BN + EMA (pass-through: never quantized) | 1/1 | 14.0 |" in (tmp_path / "table1.md").read_text()
    capsys.readouterr()
    for run, quantized in (("vqvae", False), ("bn", True)):  # the image layout: one line per run
        (tmp_path / "images" / run / "eval").mkdir(parents=True)
        (tmp_path / "images" / run / "eval" / "figures.json").write_text(json.dumps(
            {"mse": 0.01, "code_perplexity": 3.0, "codes_used": 4, "images": 10, "quantized": quantized}))
    writer.main(["cifar10", str(tmp_path / "images")])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines if line.startswith(("| VQ-VAE", "| + BN"))] == [
        "| VQ-VAE (pass-through: never quantized)", "| + BN"]


def test_maskgit_table_reads_both_stages_and_the_second_stage_curves(tmp_path):
    for name, fd in (("plain", 30.0), ("plain_seed1", 34.0), ("all", 20.0)):
        run = tmp_path / name
        (run / "transformer" / "eval").mkdir(parents=True)
        (run / "eval").mkdir()
        figures = {"fd": fd, "rfd": 5.0, "nll": 2.5, "code_perplexity": 40.0, "codes_used": 80, "fd_test": 3.0,
                   "sample_codes_used": 70, "samples": 1000, "images": 293}
        (run / "transformer" / "eval" / "figures.json").write_text(json.dumps(figures))
        (run / "eval" / "figures.json").write_text(json.dumps({"mse": 0.006}))
        (run / "train_seconds.txt").write_text("100\n")
        records = [{"step": step, "split": "dev", "fd": fd + 10 - step, "nll": 3.0} for step in (5, 10)]
        (run / "transformer" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    writer.main(["maskgit", str(tmp_path), "--rows", "plain:2 replace all"])
    table = (tmp_path / "table9.md").read_text()
    assert "| MaskGIT | 90.4 | 2/2 | 32.00 ± 2.83 | 5.00 ± 0.00 |" in table
    assert "| + replace | 79.7 | 0/1 | not evaluated |" in table
    assert "| + Affine + OPT + replace + l2 | - | 1/1 | 20.00 |" in table and "| 6.00 | 100 |" in table
    assert "FD 3.00" in table
    figures = json.loads((tmp_path / "table9.json").read_text())
    assert figures["plain"][1]["curves"]["fd"] == [[5, 39.0], [10, 34.0]]
    assert (tmp_path / "table9_curves.png").stat().st_size > 10_000
