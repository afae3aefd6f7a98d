"""Export of the evaluation path: torch.export programs and ONNX models give the eager codes and vectors."""
import pytest
import torch

from seqvq.quantize import (BinarySphericalQuantizer, FiniteScalarQuantizer, LookupFreeQuantizer, VectorQuantizer)
from seqvq.quantize.export import code_disagreements, evaluation_modules, export_onnx, export_programs

QUANTIZERS = {
    "vq": lambda: VectorQuantizer(16, 64, pre_norm=True, affine="learned", num_codebooks=2),
    "vq_cosine_ema": lambda: VectorQuantizer(16, 32, distance="cosine", codebook_update="ema"),
    "fsq": lambda: FiniteScalarQuantizer(16, levels=[8, 5, 5, 5], pre_norm=True),
    "bsq": lambda: BinarySphericalQuantizer(16, bits=6),
    "lfq": lambda: LookupFreeQuantizer(16, bits=6),
}


def trained(name):
    """The quantizer after two training passes (BatchNorm moments, EMA codebook moved), left in training mode."""
    torch.manual_seed(0)
    quantizer = QUANTIZERS[name]().train()
    for _ in range(2):
        quantizer(torch.randn(4, 20, 16) * 2 + 1)
    return quantizer


def inputs(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 2 + 1


@pytest.mark.parametrize("name", QUANTIZERS)
def test_exported_programs_give_the_eager_codes_and_vectors_at_other_sizes(name):
    quantizer = trained(name)
    encode, decode = export_programs(quantizer, inputs(3, 7, 16))
    assert quantizer.training  # the caller's quantizer is left as it was
    encoder, decoder = evaluation_modules(quantizer)
    x = inputs(5, 400, 16)  # other batch and time sizes than traced
    codes = encoder(x)
    exported = encode.module()(x)
    if isinstance(quantizer, VectorQuantizer):
        disagreeing, ties = code_disagreements(quantizer, x, exported, codes)
        assert disagreeing == ties  # any disagreement is a float32 tie
    else:
        assert torch.equal(exported, codes)
    assert torch.equal(decode.module()(codes), decoder(codes))


@pytest.mark.parametrize("name", ["vq", "fsq"])
def test_onnx_models_run_by_onnxruntime_give_the_eager_codes_and_vectors(name, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    quantizer = trained(name)
    encode_path, decode_path = export_onnx(quantizer, inputs(3, 7, 16), tmp_path / "onnx")
    encoder, decoder = evaluation_modules(quantizer)
    x = inputs(5, 400, 16)
    codes = encoder(x)
    encode, decode = (onnxruntime.InferenceSession(str(path)) for path in (encode_path, decode_path))
    onnx_codes = torch.from_numpy(encode.run(None, {encode.get_inputs()[0].name: x.numpy()})[0])
    if isinstance(quantizer, VectorQuantizer):
        disagreeing, ties = code_disagreements(quantizer, x, onnx_codes, codes)
        assert disagreeing == ties
    else:
        assert torch.equal(onnx_codes, codes)
    vectors = decode.run(None, {decode.get_inputs()[0].name: codes.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(vectors), decoder(codes), rtol=0, atol=1e-6)
    with pytest.raises(FileExistsError):  # an export never overwrites one
        export_onnx(quantizer, inputs(3, 7, 16), tmp_path / "onnx")


def test_disagreements_count_float32_ties_apart():
    quantizer = VectorQuantizer(2, 3).eval()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[[1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]]]))
    x = torch.tensor([[0.0, 0.0], [0.9, 0.0]])  # the first is equidistant from codes 0 and 1
    assert code_disagreements(quantizer, x, torch.tensor([1, 1]), torch.tensor([0, 0])) == (2, 1)
