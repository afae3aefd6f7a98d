"""Conformance table: does a VQ layer behave the same under DDP, bf16 autocast, gradient accumulation, resume and
padding as in one plain float32 process?  ``PYTHONPATH=. python bench/conformance.py [--peer-only | --seqvq-only]``

Run on seqvq's ``VectorQuantizer`` and on vector-quantize-pytorch's ``VectorQuantize`` (``pip install
seqvq[bench]``; its rows are "not installed" without it) with equivalent settings: EMA codebook (decay 0.99,
Łańcucki eq. 4), k-means init on the first batch (Huh App. A.7), dead-code handling (seqvq: LRU life span of 2
steps, Huh §3; the peer: ``dead_code_threshold_ratio=0.1``, its documented example; its older
``threshold_ema_dead_code`` is deprecated).  The peer draws k-means seeds and replacements from the global torch
generator, so two copies compared side by side get the same global seed before each step (``same_draws``).  Each
property is checked on small random data (a few seconds) and reported as pass/fail with the measured deviation:

1. DDP: two gloo ranks (spawned, file rendezvous), each on its own batch, end with the codebook of one process
   trained on the union of the two batches (max |Δ codebook|);
2. bf16: codes under ``torch.autocast("cpu", torch.bfloat16)`` agree with float32 on >= 99.9 % of inputs and
   the number of codes used does not drop;
3. gradient accumulation: k micro-batches then one step equal one k-times-larger batch (max |Δ| of every buffer:
   codebook, EMA counts and sums, step and usage clocks, generators); seqvq with
   ``seqvq.quantize.accumulation.accumulated_step``, the peer with its
   ``accum_ema_update=True`` on all but the last micro-batch;
4. exact resume: ``state_dict`` saved mid-run and loaded into a fresh layer (the global RNG reseeded, as in a new
   process) continues to the state (every buffer) of the uninterrupted run;
5. padded == unpadded: a padded batch with its mask (seqvq: ``lengths``; the peer: ``mask``) gives the codes and
   codebook of the valid vectors alone.

The peer is run twice: with the settings above, and with its EMA codebook alone (no k-means, no dead codes).

A row passes at max |Δ| <= 1e-5 (float32 summation order), resume at exactly 0.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import seqvq
from seqvq.quantize.accumulation import accumulated_step

DIM, CODES, BATCH, TIME, STEPS = 16, 64, 8, 32, 6
TOLERANCE = 1e-5


def batch(step: int, part: int = 0, batch_size: int = BATCH):
    """Random vectors of step ``step``; ``part`` (a rank or a micro-batch) shifts the data so that parts differ."""
    generator = torch.Generator().manual_seed(1000 * part + step)
    return torch.randn(batch_size, TIME, DIM, generator=generator) + 2.0 * part


class SeqvqLayer:
    name = "seqvq " + importlib.metadata.version("seqvq")
    mask_support = "lengths / mask"

    @staticmethod
    def make():
        torch.manual_seed(0)
        return seqvq.VectorQuantizer(DIM, CODES, codebook_update="ema", ema_decay=0.99, kmeans_init=True,
                                     replace_dead_after=2)

    @staticmethod
    def step(layer, x, mask=None):
        return layer(x, mask=mask).codes

    @staticmethod
    def codebook(layer):
        return layer.codebook.detach().reshape(-1, DIM).clone()

    @staticmethod
    def accumulate(layer, micro_batches):
        with accumulated_step(layer):
            for x in micro_batches:
                layer(x)


class PeerLayer:
    try:
        name = "vector-quantize-pytorch " + importlib.metadata.version("vector-quantize-pytorch")
    except importlib.metadata.PackageNotFoundError:
        name = "vector-quantize-pytorch (not installed)"
    mask_support = "mask"

    @staticmethod
    def make():
        from vector_quantize_pytorch import VectorQuantize
        torch.manual_seed(0)
        return VectorQuantize(DIM, CODES, decay=0.99, kmeans_init=True, dead_code_threshold_ratio=0.1)

    @staticmethod
    def step(layer, x, mask=None, **kwargs):
        return layer(x, mask=mask, **kwargs)[1]

    @staticmethod
    def codebook(layer):
        return layer._codebook.embed.detach().reshape(-1, DIM).clone()

    @staticmethod
    def accumulate(layer, micro_batches):
        for index, x in enumerate(micro_batches):
            PeerLayer.step(layer, x, accum_ema_update=index < len(micro_batches) - 1)


class PeerEmaOnlyLayer(PeerLayer):
    """The peer with its EMA codebook alone (random init, no k-means, no dead-code replacement): which of its
    failures come from those two."""
    name = PeerLayer.name + ", EMA only"

    @staticmethod
    def make():
        from vector_quantize_pytorch import VectorQuantize
        torch.manual_seed(0)
        return VectorQuantize(DIM, CODES, decay=0.99)


def same_draws(step: int) -> None:
    """The same global generator state for each copy's step ``step`` (the peer's random draws; seqvq's are in
    its buffers)."""
    torch.manual_seed(1 + step)


def whole_state(layer) -> torch.Tensor:
    """Every buffer of the layer's ``state_dict`` (codebook, EMA counts and sums, clocks, generators), flattened."""
    return torch.cat([tensor.detach().double().reshape(-1) for tensor in layer.state_dict().values()])


def max_deviation(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def verdict(deviation: float, tolerance: float = TOLERANCE) -> str:
    return "pass" if deviation <= tolerance else "FAIL"


# 1. DDP ---------------------------------------------------------------------------------------------------------

def ddp_worker(rank: int, library: str, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    adapter = LIBRARIES[library]
    layer = adapter.make().train()
    for step in range(STEPS):
        same_draws(step)
        adapter.step(layer, batch(step, rank))
    torch.save(adapter.codebook(layer), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def check_ddp(library: str, adapter) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(ddp_worker, args=(library, os.path.join(out_dir, "init"), out_dir), nprocs=2, join=True)
        ranks = [torch.load(os.path.join(out_dir, f"rank{rank}.pt")) for rank in range(2)]
    layer = adapter.make().train()
    for step in range(STEPS):
        same_draws(step)
        adapter.step(layer, torch.cat([batch(step, 0), batch(step, 1)]))
    deviation = max_deviation(ranks[0], adapter.codebook(layer))
    between_ranks = max_deviation(ranks[0], ranks[1])
    return verdict(max(deviation, between_ranks)), \
        f"max abs diff codebook vs one process {deviation:.2e}; between ranks {between_ranks:.2e}"


# 2. bf16 autocast -----------------------------------------------------------------------------------------------

def check_bf16(adapter) -> tuple[str, str]:
    layer = adapter.make().train()
    for step in range(STEPS):
        adapter.step(layer, batch(step))
    layer.eval()
    x = torch.cat([batch(100 + step) for step in range(8)])  # 8 x 8 x 32 = 2,048 vectors
    with torch.no_grad():
        codes32 = adapter.step(layer, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            codes16 = adapter.step(layer, x)
    agreement = (codes32 == codes16).float().mean().item()
    used32, used16 = codes32.unique().numel(), codes16.unique().numel()
    passed = agreement >= 0.999 and used16 >= used32
    return ("pass" if passed else "FAIL"), \
        f"codes agree on {100 * agreement:.2f} % of {codes32.numel()}; codes used {used32} fp32, {used16} bf16"


# 3. gradient accumulation ---------------------------------------------------------------------------------------

def check_accumulation(adapter, k: int = 4) -> tuple[str, str]:
    """Step 0 (k-means init) on the large batch for both copies, then accumulated steps against large ones."""
    large, accumulated = adapter.make().train(), adapter.make().train()
    first = torch.cat([batch(0, part, BATCH // k) for part in range(k)])
    for layer in (large, accumulated):
        same_draws(0)
        adapter.step(layer, first)
    for step in range(1, STEPS):
        micro_batches = [batch(step, part, BATCH // k) for part in range(k)]
        same_draws(step)
        adapter.step(large, torch.cat(micro_batches))
        same_draws(step)
        adapter.accumulate(accumulated, micro_batches)
    deviation = max_deviation(whole_state(large), whole_state(accumulated))
    return verdict(deviation), f"k = {k}: max abs diff of the whole state_dict {deviation:.2e}"


# 4. exact resume ------------------------------------------------------------------------------------------------

def check_resume(adapter) -> tuple[str, str]:
    uninterrupted = adapter.make().train()
    for step in range(2 * STEPS):
        adapter.step(uninterrupted, batch(step))
    first = adapter.make().train()
    for step in range(STEPS):
        adapter.step(first, batch(step))
    state = copy.deepcopy(first.state_dict())
    torch.manual_seed(12345)  # a new process: the global generator is not the one the first run left
    resumed = adapter.make().train()
    resumed.load_state_dict(state)
    for step in range(STEPS, 2 * STEPS):
        adapter.step(resumed, batch(step))
    deviation = max_deviation(whole_state(uninterrupted), whole_state(resumed))
    return verdict(deviation, 0.0), \
        f"max abs diff of the whole state_dict after {STEPS} + {STEPS} steps {deviation:.2e}"


# 5. padded == unpadded ------------------------------------------------------------------------------------------

def check_padding(adapter) -> tuple[str, str]:
    padded, unpadded = adapter.make().train(), adapter.make().train()
    code_mismatches = 0
    for step in range(STEPS):
        x = batch(step)
        lengths = torch.randint(TIME // 2, TIME + 1, (BATCH,), generator=torch.Generator().manual_seed(step))
        mask = torch.arange(TIME)[None, :] < lengths[:, None]
        x = x.masked_fill(~mask[..., None], 50.0)  # padding far from the data: it must not move anything
        same_draws(step)
        try:
            codes_padded = adapter.step(padded, x, mask=mask)
        except TypeError as error:
            return "not supported", str(error).splitlines()[0]
        same_draws(step)
        codes_unpadded = adapter.step(unpadded, x[mask][None])
        code_mismatches += (codes_padded[mask] != codes_unpadded[0]).sum().item()
    deviation = max_deviation(adapter.codebook(padded), adapter.codebook(unpadded))
    passed = code_mismatches == 0 and deviation <= TOLERANCE
    return ("pass" if passed else "FAIL"), \
        f"{adapter.mask_support}: {code_mismatches} valid codes differ; max abs diff codebook {deviation:.2e}"


LIBRARIES = {"seqvq": SeqvqLayer, "peer": PeerLayer, "peer-ema-only": PeerEmaOnlyLayer}
PROPERTIES = [("2-rank gloo DDP == one process on the union", check_ddp),
              ("bf16 autocast codes == float32 (>= 99.9 %), usage kept", lambda library, adapter: check_bf16(adapter)),
              ("accumulation: k micro-batches == one k-times batch",
               lambda library, adapter: check_accumulation(adapter)),
              ("exact resume mid-run (state_dict)", lambda library, adapter: check_resume(adapter)),
              ("padded == unpadded", lambda library, adapter: check_padding(adapter))]


def peer_available() -> bool:
    return importlib.util.find_spec("vector_quantize_pytorch") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seqvq-only", action="store_true")
    parser.add_argument("--peer-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    libraries = [name for name in LIBRARIES if not (args.seqvq_only and name.startswith("peer"))
                 and not (args.peer_only and name == "seqvq")]
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print("\n| library | property | result | measured deviation |\n|---|---|---|---|")
    for library in libraries:
        adapter = LIBRARIES[library]
        for prop, check in PROPERTIES:
            if library.startswith("peer") and not peer_available():
                result, detail = "not installed", "pip install seqvq[bench]"
            else:
                try:
                    result, detail = check(library, adapter)
                except Exception as error:  # a check that cannot run is a row of the table, not a crash
                    result, detail = "error", f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
            print(f"| {adapter.name} | {prop} | {result} | {detail} |", flush=True)


if __name__ == "__main__":
    main()
