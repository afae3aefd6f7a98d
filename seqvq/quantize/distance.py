"""Nearest-code search without the N x K distance matrix (Huh et al. 2023, Appendix A.1 "divide-and-conquer").

The assignment of eq. 5 (Huh) / eq. 1 (Łańcucki) is ``argmin_j ||z_i - c_j||^2``.  Expanding the square gives
``||z_i||^2 - 2 z_i . c_j + ||c_j||^2``; the first term does not change the argmin, so each chunk of rows costs one
``addmm`` (the matmul that is the floor of any exact search) into a reused cache-sized buffer, and an argmin.

The argmin is two-level: PyTorch's row-wise min-with-index costs about as much as the matmul itself at d = 64,
while a value-only ``amin`` is nearly free.  So the codes are taken in groups of ``GROUP`` (the codebook padded
with dummy codes scored +inf), ``amin`` finds each group's best score, an argmin over the K / GROUP group minima
picks the group, and an argmin inside that group the code — the first minimum, exactly as ``argmin`` would.

Precision: the expansion cancels catastrophically in float32 when data and codes sit far from the origin
(``||c||^2`` ~ offset^2 * D while the gaps between codes are O(1)).  Distances are translation invariant, so the
codes are centred on their mean mu, ``c' = c - mu``, and the scores are ``||c'||^2 + 2 mu.c' - 2 z.c'``
(= ``||z - c||^2 - ||z - mu||^2``): no term grows with offset^2 any more, the inputs need no shifted copy, and the
argmin equals a float64 brute force for mean-shifted inputs (tested at offsets 0, 10, 50), up to ties that float32
cannot resolve: in ``bench/peer_speed.py``'s N = 1e5, K = 1024, D = 512 shape, one row has two codes at squared
distance 925.04966 and 925.04964 (relative gap 3e-8, under float32's 6e-8), and the torch path takes the farther.

FAISS backend: where faiss is installed (``pip install seqvq[bench]``), exact CPU float32 searches go to FAISS's
``IndexFlatL2`` (k = 1): FAISS's own tiled sgemm with a fused per-row minimum.  Where the codebook sits far from
the origin the rows are shifted by mu one block at a time into a reused buffer (the same centring, so the same
exactness); the codes are written straight into the output.  Why: in eager torch the minimum over each score block
takes separate passes after the matmul (the two-level argmin above), so the torch path costs more over the bare
matmul than FAISS does, on every shape measured (``bench/peer_speed.py``); neither block or group sizes nor
``torch.compile`` of the reduction closed that gap.  ``backend="torch"`` forces the plain-torch path, which CUDA
and other dtypes always take.

Cosine distance is the same search on l2-normalised vectors (``||a - b||^2 = 2 - 2 cos(a, b)``); the caller
normalises.

Low precision: a bfloat16 search is only faster where matmuls run on tensor cores (CUDA), not on this CPU.  When
enabled it keeps ``rerank`` candidates per row from the bfloat16 distances and re-ranks them in float32, so the
result is exact unless the true nearest code is outside the candidates.
"""
from __future__ import annotations

import torch

try:
    import faiss
except ImportError:  # optional: seqvq[bench]
    faiss = None

# Elements of one (rows x codes) score block: 2^20 floats = 4 MiB, reused for every block; fastest of 2^16-2^22 in
# bench/vq_speed.py on the 2-core CPU here, and a negligible allocation on GPUs.
DEFAULT_BLOCK_ELEMENTS = 1 << 20
# Codes per block for very large codebooks: above this the codes are searched in slices with a running minimum.
DEFAULT_CODE_CHUNK = 8192
# Codes per group of the two-level argmin (a divisor of DEFAULT_CODE_CHUNK).
GROUP = 32
BACKENDS = ("auto", "torch", "faiss")
# Elements of FAISS's own score tile (4096 queries x 1024 codes), allocated afresh by every search call.
FAISS_TILE = 1 << 22


def centred_codebook(codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes, bias, mu)``: the codebook centred on its mean ``mu`` (detached) and per-code offsets such that
    ``bias - 2 z @ codes.T = ||z - c||^2 - ||z - mu||^2`` — the squared distances up to a per-row constant, with no
    term that grows with the distance of data and codes from the origin (see the module docstring)."""
    shift = codebook.mean(dim=0).detach()
    codes = codebook - shift
    return codes, codes.pow(2).sum(dim=1) + 2.0 * (codes @ shift), shift


def centred_scores(rows: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``||z - c||^2 - ||z - mu||^2`` for every row and code (rows, K): the argmin, softmax or Gumbel-max of its
    negation over codes is that of the squared distances.  Differentiable (the shift mu is detached, so the gradient
    is that of ``||z - c||^2``)."""
    codes, bias, _ = centred_codebook(codebook)
    return torch.addmm(bias, rows, codes.T, alpha=-2.0)


@torch.no_grad()
def nearest_codes(
    z: torch.Tensor,
    codebook: torch.Tensor,
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    code_chunk: int = DEFAULT_CODE_CHUNK,
    low_precision: bool = False,
    rerank: int = 8,
    with_distances: bool = True,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return ``(indices, squared_distances)`` of the nearest row of ``codebook`` (K, D) for each row of z (N, D);
    the distances are None with ``with_distances=False``.

    ``backend``: ``"faiss"`` (exact CPU float32 search by FAISS; needs faiss installed), ``"torch"``, or ``"auto"``
    (FAISS where it is installed and applies, else torch).  Memory is O(block_elements) beyond the inputs (FAISS adds
    its own fixed-size tile); the full N x K matrix is never allocated.
    """
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_codes expects z (N, D) and codebook (K, D); got {tuple(z.shape)} and "
                         f"{tuple(codebook.shape)}")
    if backend not in BACKENDS:
        raise ValueError(f"nearest_codes: backend must be one of {BACKENDS}, got {backend!r}")
    faiss_applies = (faiss is not None and not low_precision and z.device.type == "cpu"
                     and z.dtype == codebook.dtype == torch.float32 and not torch.compiler.is_compiling())
    if backend == "faiss" and not faiss_applies:
        raise ValueError("nearest_codes: backend='faiss' needs faiss installed (pip install seqvq[bench]), CPU "
                         "float32 inputs and low_precision=False")
    if torch.compiler.is_compiling() and not with_distances and not low_precision:
        return _traced_argmin(z, codebook), None
    num_vectors, num_codes = z.shape[0], codebook.shape[0]
    indices = torch.empty(num_vectors, dtype=torch.long, device=z.device)
    distances = z.new_empty(num_vectors) if with_distances else None
    if num_vectors == 0:
        return indices, distances

    codes, bias, shift = centred_codebook(codebook)
    if faiss_applies and backend != "torch":
        _faiss_search(z, codebook, codes, shift, indices, distances,
                      max(1, max(block_elements, FAISS_TILE) // z.shape[1]))
        return indices, distances
    if low_precision:  # bfloat16 cannot hold the mu.c' term precisely: shift the rows instead (cheap on a GPU)
        search_codes, search_bias = codes.to(torch.bfloat16), codes.pow(2).sum(dim=1).to(torch.bfloat16)
        rows_per_block = max(1, block_elements // num_codes)

        def search(rows):
            return _rerank_candidates(rows - shift, codes, search_codes, search_bias, rerank)
    else:
        padding = -num_codes % GROUP
        search_codes = torch.cat([codes, codes.new_zeros(padding, codes.shape[1])])
        search_bias = torch.cat([bias, bias.new_full((padding,), float("inf"))])
        codes_per_block = min(search_codes.shape[0], code_chunk - code_chunk % GROUP or GROUP)
        rows_per_block = max(1, block_elements // codes_per_block)
        buffer = z.new_empty(min(rows_per_block, num_vectors), codes_per_block)

        def search(rows):
            best = _exact_block_argmin(rows, search_codes, search_bias, codes_per_block, buffer)
            return best.clamp_max_(num_codes - 1)  # only NaN scores could select a padding code

    for start in range(0, num_vectors, rows_per_block):
        rows = z[start:start + rows_per_block]
        best = indices[start:start + rows.shape[0]]
        best.copy_(search(rows))
        if with_distances:
            distances[start:start + rows.shape[0]] = (rows - codebook[best]).pow(2).sum(dim=1)
    return indices, distances


def _traced_argmin(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The search as ``torch.compile`` and ``torch.export`` trace it: the centred scores of every row in one block
    (the compiler fuses the argmin into the matmul's consumer; no Python loop over a size that may depend on the data,
    as the number of valid vectors does) and their first minimum."""
    return centred_scores(z, codebook).argmin(dim=1)


def _faiss_search(z, codebook, codes, shift, indices, distances, rows_per_block):
    """Exact search by FAISS's ``IndexFlatL2`` (k = 1), writing the codes into ``indices`` and FAISS's squared
    distances (float32, of the centred or near-origin vectors, so no cancellation) into ``distances`` (unless None),
    without a copy.

    Where the codebook mean lies within the codes' rms radius of the origin (``||mu||^2 <= mean ||c - mu||^2``),
    ``||c||^2`` is no larger than the spread it must resolve, the centring buys no precision, and all rows go to
    FAISS in one call, as they are.  Otherwise the rows are shifted by ``shift`` one block of ``rows_per_block`` at a
    time into a reused buffer and searched among the centred ``codes``.  (Every FAISS call allocates its own
    16 MiB tile, so blocks are kept at least that large.)"""
    centre = bool(shift.pow(2).sum() > codes.pow(2).sum(dim=1).mean()) or not z.is_contiguous()  # (no full copy)
    # faiss-cpu bundles its own OpenMP runtime, which ignores torch.set_num_threads: without this a run told to use
    # one thread (e.g. two table runs side by side on two cores) would search on every core.
    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatL2(codes.shape[1])
    index.add((codes if centre else codebook).contiguous().numpy())
    if not centre:
        rows_per_block = z.shape[0]
    rows_per_block = min(rows_per_block, z.shape[0])
    shifted = codes.new_empty(rows_per_block if centre else 0, codes.shape[1])
    scratch = codes.new_empty(rows_per_block if distances is None else 0)
    for start in range(0, z.shape[0], rows_per_block):
        rows = z[start:start + rows_per_block]
        count = rows.shape[0]
        if centre:
            rows = torch.sub(rows, shift, out=shifted[:count])
        found = (scratch if distances is None else distances[start:])[:count]
        best = indices[start:start + count]
        index.search(rows.numpy(), 1, D=found.view(count, 1).numpy(), I=best.view(count, 1).numpy())
    indices.clamp_min_(0)  # FAISS answers -1 only for a row whose every distance is NaN


def _exact_block_argmin(rows, codes, code_sq_norms, codes_per_block, buffer):
    """argmin over codes of ``||c||^2 - 2 z.c`` for one block of rows, slicing the codes when K is large."""
    count = rows.shape[0]
    best_value, best_index = None, None
    for code_start in range(0, codes.shape[0], codes_per_block):
        code_slice = slice(code_start, code_start + codes_per_block)
        width = codes[code_slice].shape[0]
        scores = buffer[:count, :width]
        torch.addmm(code_sq_norms[code_slice], rows, codes[code_slice].T, alpha=-2.0, out=scores)
        value, index = _two_level_min(scores)
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value < best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index + code_start, best_index)
    return best_index


def _two_level_min(scores):
    """Row-wise (min, first argmin) of ``scores`` (rows, K), K a multiple of GROUP; see the module docstring."""
    count, width = scores.shape
    groups = scores.view(count, width // GROUP, GROUP)
    best_group = groups.amin(dim=2).argmin(dim=1)
    members = groups[torch.arange(count, device=scores.device), best_group]  # (rows, GROUP)
    within = members.argmin(dim=1, keepdim=True)
    return members.gather(1, within).squeeze(1), best_group * GROUP + within.squeeze(1)


def _rerank_candidates(rows, codebook, search_codes, search_bias, rerank):
    """Low-precision scores pick ``rerank`` candidates per row; float32 distances choose among them (``rows`` and
    ``codebook`` shifted alike)."""
    scores = torch.addmm(search_bias, rows.to(search_codes.dtype), search_codes.T, alpha=-2.0)
    candidates = scores.topk(min(rerank, codebook.shape[0]), dim=1, largest=False).indices  # (rows, r)
    exact = (rows.unsqueeze(1) - codebook[candidates]).pow(2).sum(dim=2)
    return candidates.gather(1, exact.argmin(dim=1, keepdim=True)).squeeze(1)
