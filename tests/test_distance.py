"""Exact nearest-code search (seqvq.quantize.distance): float64 brute-force agreement on every backend, first-minimum
ties, the shared mean-centred scores, and memory that stays O(block)."""
import json
import subprocess
import sys

import pytest
import torch

from seqvq.quantize import distance
from seqvq.quantize.distance import centred_scores, nearest_codes

BACKENDS = ["torch"] + (["faiss"] if distance.faiss is not None else [])


def brute_force(z, codes):
    return torch.cdist(z.double(), codes.double()).argmin(dim=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("data_offset,code_offset", [(0.0, 0.0), (10.0, 10.0), (50.0, 50.0), (50.0, 0.0)])
def test_codes_equal_a_float64_brute_force(backend, data_offset, code_offset):
    generator = torch.Generator().manual_seed(int(data_offset + code_offset))
    z = torch.randn(3000, 32, generator=generator) + data_offset
    codes = torch.randn(700, 32, generator=generator) + code_offset
    expected = brute_force(z, codes)
    for blocks in (dict(), dict(block_elements=1000, code_chunk=128)):
        indices, distances = nearest_codes(z, codes, backend=backend, **blocks)
        assert torch.equal(indices, expected), blocks
        exact = (z.double() - codes.double()[expected]).pow(2).sum(1)
        torch.testing.assert_close(distances.double(), exact, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_first_code(backend):
    generator = torch.Generator().manual_seed(1)
    codes = torch.randn(40, 8, generator=generator)
    doubled = torch.cat([codes, codes])  # every code twice: rows 40..79 tie with rows 0..39
    z = codes[torch.randint(40, (500,), generator=generator)] + 0.01 * torch.randn(500, 8, generator=generator)
    indices, _ = nearest_codes(z, doubled, backend=backend)
    assert torch.equal(indices, brute_force(z, codes))


def test_faiss_backend_refuses_what_it_cannot_search():
    z, codes = torch.randn(5, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="backend='faiss' needs"):
        nearest_codes(z, codes, backend="faiss")
    with pytest.raises(ValueError, match="backend must be one of"):
        nearest_codes(z, codes, backend="cuda")


@pytest.mark.skipif(distance.faiss is None, reason="faiss not installed")
def test_faiss_search_uses_torchs_thread_count():
    """faiss-cpu has its own OpenMP runtime: a search must follow torch.set_num_threads, not use every core."""
    before = torch.get_num_threads()
    z, codes = torch.randn(50, 4), torch.randn(7, 4)
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            nearest_codes(z, codes, backend="faiss")
            assert distance.faiss.omp_get_max_threads() == threads
    finally:
        torch.set_num_threads(before)


def test_centred_scores_are_distances_up_to_a_row_constant_and_differentiable():
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(6, 5, generator=generator) + 30.0
    codebook = (torch.randn(9, 5, generator=generator) + 30.0).requires_grad_()
    scores = centred_scores(z, codebook)
    exact = torch.cdist(z.double(), codebook.detach().double()).pow(2)
    offsets = exact - scores.detach().double()  # the same constant along each row
    torch.testing.assert_close(offsets, offsets[:, :1].expand_as(offsets), rtol=0, atol=1e-3)
    scores.sum().backward()
    expected_gradient = (2 * (codebook.detach() * z.shape[0] - z.sum(0))).double()  # of sum ||z - c||^2
    torch.testing.assert_close(codebook.grad.double(), expected_gradient, rtol=1e-5, atol=1e-3)


PEAK_GROWTH = """
import json, resource, sys, torch
from seqvq.quantize.distance import nearest_codes
z, codes = torch.randn(60000, 8), torch.randn(2048, 8)
growth = {}
for backend in sys.argv[1:]:
    nearest_codes(z[:100], codes, backend=backend)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    nearest_codes(z, codes, backend=backend)
    growth[backend] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(growth))
"""


def test_memory_stays_o_block_not_n_by_k():
    # The full 60000 x 2048 float32 score matrix would be 469 MiB; blocks are 4 MiB (FAISS tiles 16 MiB).  Each
    # backend's growth of the peak is over the peak before it, in one fresh process (one interpreter start).
    growth_mib = json.loads(subprocess.check_output([sys.executable, "-c", PEAK_GROWTH, *BACKENDS]))
    assert set(growth_mib) == set(BACKENDS) and max(growth_mib.values()) < 48, growth_mib


@pytest.mark.parametrize("backend", BACKENDS)
def test_parameters_and_non_contiguous_inputs_are_searched_as_they_are(backend):
    generator = torch.Generator().manual_seed(3)
    codebook = torch.nn.Parameter(torch.randn(50, 6, generator=generator) + 20.0)
    z = (torch.randn(6, 400, generator=generator) + 20.0).T.requires_grad_()  # a transposed view, needing grad
    indices, distances = nearest_codes(z, codebook, backend=backend)
    assert torch.equal(indices, brute_force(z.detach(), codebook.detach())) and not distances.requires_grad
