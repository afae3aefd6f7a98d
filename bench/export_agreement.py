"""Agreement of the exported evaluation path with eager on 100,000 inputs: codes of the ``torch.export`` program and
of the ONNX model run by onnxruntime against the eager quantizer's (FAISS search where installed), disagreements
and how many of them are float32 ties (seqvq.quantize.export.code_disagreements); decoded vectors' largest
difference.

    PYTHONPATH=. python bench/export_agreement.py [--inputs 100000] [--threads 1]
"""
from __future__ import annotations

import argparse
import tempfile

import torch

from seqvq.quantize import FiniteScalarQuantizer, LookupFreeQuantizer, VectorQuantizer
from seqvq.quantize.export import code_disagreements, evaluation_modules, export_onnx, export_programs

QUANTIZERS = {
    "VQ 1024 x 64, +BN, learned affine": lambda: VectorQuantizer(64, 1024, pre_norm=True, affine="learned"),
    "VQ 2 x 512, cosine, EMA": lambda: VectorQuantizer(64, 512, num_codebooks=2, distance="cosine",
                                                       codebook_update="ema"),
    "FSQ [8, 5, 5, 5], +BN": lambda: FiniteScalarQuantizer(64, levels=[8, 5, 5, 5], pre_norm=True),
    "LFQ 10 bits": lambda: LookupFreeQuantizer(64, bits=10),
}
CHUNK = 10000  # rows per call (the traced search holds CHUNK x K scores)


def in_chunks(function, x):
    return torch.cat([torch.as_tensor(function(x[start:start + CHUNK])) for start in range(0, x.shape[0], CHUNK)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    generator = torch.Generator().manual_seed(0)
    print(f"{args.inputs} inputs, {args.threads} thread(s); 'ties' = disagreements at equal float32 distance")
    print("| quantizer | program: codes differ (ties) | ONNX: codes differ (ties) | program / ONNX decode max |diff| |")
    print("|---|---|---|---|")
    for name, build in QUANTIZERS.items():
        torch.manual_seed(0)
        quantizer = build().train()
        for _ in range(3):  # move BatchNorm moments and the EMA codebook off their initial values
            quantizer(torch.randn(512, 64, generator=generator) * 2 + 1)
        x = torch.randn(args.inputs, 64, generator=generator) * 2 + 1
        encoder, decoder = evaluation_modules(quantizer)
        with torch.no_grad():
            codes = in_chunks(encoder, x)
            vectors = decoder(codes)
        encode, decode = export_programs(quantizer, x[:16])
        with tempfile.TemporaryDirectory() as directory:
            encode_path, decode_path = export_onnx(quantizer, x[:16], directory)
            onnx_encode, onnx_decode = (onnxruntime.InferenceSession(str(path)) for path in (encode_path, decode_path))
        with torch.no_grad():
            program_codes = in_chunks(encode.module(), x)
            program_vectors = decode.module()(codes)
        onnx_input = onnx_encode.get_inputs()[0].name
        onnx_codes = in_chunks(lambda rows: onnx_encode.run(None, {onnx_input: rows.numpy()})[0], x)
        onnx_vectors = torch.as_tensor(onnx_decode.run(None, {onnx_decode.get_inputs()[0].name: codes.numpy()})[0])
        cells = []
        for found in (program_codes, onnx_codes):
            if isinstance(quantizer, VectorQuantizer):
                cells.append("%d (%d)" % code_disagreements(quantizer, x, found, codes))
            else:
                cells.append(f"{int((found != codes).sum())} (-)")
        decode_gap = f"{(program_vectors - vectors).abs().max():.1e} / {(onnx_vectors - vectors).abs().max():.1e}"
        print(f"| {name} | {cells[0]} | {cells[1]} | {decode_gap} |", flush=True)


if __name__ == "__main__":
    main()
