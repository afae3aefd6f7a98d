"""Forward + backward time of the recipes' BiLSTMs: ``nn.LSTM`` on a PackedSequence against ``MaskedLSTM``.

Both give the same valid outputs (tests/test_masked_lstm.py); the packed LSTM's CPU backward narrows the packed data
once per step and zero-fills an input-sized gradient for each narrow. Shapes: the speech encoder of
recipes/wsj/conf/base.yaml (3 BiLSTM layers of 128 over a 2-layer conv front end, batch 8, about 100 latents)
and the ScribbleLens line encoder (1 BiLSTM layer of 64).

Usage: PYTHONPATH=. python bench/lstm_speed.py [--repeats 10] [--threads 1]
"""
import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqvq.models.masked_lstm import MaskedLSTM

SHAPES = {  # name: (batch, steps, input dim, hidden, layers)
    "speech encoder (wsj/conf/base.yaml)": (8, 110, 192, 128, 3),
    "handwriting encoder (scribblelens)": (16, 200, 64, 64, 1),
}


def packed(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    sequence = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(lstm(sequence)[0], batch_first=True, total_length=x.shape[1])[0]


def seconds(run, repeats: int) -> float:
    times = []
    for repeat in range(repeats + 2):
        start = time.perf_counter()
        run().sum().backward()
        if repeat >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), median of {args.repeats} forward + backward passes")
    for name, (batch, steps, dim, hidden, layers) in SHAPES.items():
        torch.manual_seed(0)
        masked = MaskedLSTM(dim, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        reference = nn.LSTM(dim, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        reference.load_state_dict(masked.state_dict())
        x = torch.randn(batch, steps, dim, requires_grad=True)
        lengths = torch.randint(steps // 2, steps + 1, (batch,))
        lengths[0] = steps
        slow = seconds(lambda: packed(reference, x, lengths), args.repeats)
        mask = torch.arange(steps)[None, :] < lengths[:, None]
        fast = seconds(lambda: masked(x, mask), args.repeats)
        print(f"{name}: packed nn.LSTM {1000 * slow:.1f} ms, MaskedLSTM {1000 * fast:.1f} ms "
              f"({slow / fast:.2f}x faster)")


if __name__ == "__main__":
    main()
