"""A fused, step-at-a-time LSTM for sampling, built from a trained PerformanceRNN.

Sampling runs the network one event at a time, where ``nn.LSTM``'s per-call overhead
dominates. Here the weights are pre-packed once: the first layer's input projection
becomes a lookup table (embedding x input weights + both biases, one row per token), and
each deeper layer multiplies ``[input, hidden]`` by one stacked matrix with a single
``addmm``. With ``quantize=True`` those matrices are int8 (fbgemm dynamic quantization,
per output channel), which reads a quarter of the bytes per step on a CPU.
"""

from __future__ import annotations

import warnings

import torch

from composer.model import PerformanceRNN

State = tuple[torch.Tensor, torch.Tensor]  # h and c, each (layers, batch, hidden), as nn.LSTM keeps them


class _Linear:
    """y = x @ W^T + b, in float32 or as fbgemm's int8 dynamic-quantized linear."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, quantize: bool):
        self.quantized = quantize
        if quantize:
            scales = weight.abs().amax(dim=1).clamp_min(1e-8) / 127.0
            zero = torch.zeros(weight.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # qint8 tensor creation is marked deprecated, still the fbgemm path
                warnings.simplefilter("ignore", UserWarning)
                qweight = torch.quantize_per_channel(weight.float().contiguous(), scales.double(), zero, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qweight, bias.float().contiguous())
        else:
            self.weight_t = weight.float().t().contiguous()
            self.bias = bias.float().contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantized:
            return torch.ops.quantized.linear_dynamic(x, self.packed)
        return torch.addmm(self.bias, x, self.weight_t)


def quantization_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines


class FusedLSTM:
    """The same function as ``PerformanceRNN`` for one step at a time, with less overhead."""

    def __init__(self, model: PerformanceRNN, quantize: bool = False):
        quantize = quantize and quantization_available()
        if quantize:
            torch.backends.quantized.engine = "fbgemm"
        lstm = model.lstm
        self.hidden = lstm.hidden_size
        self.layers = lstm.num_layers
        self.quantized = quantize
        device = next(model.parameters()).device
        if quantize and device.type != "cpu":
            raise ValueError("int8 sampling runs on the CPU only")
        with torch.no_grad():
            w_ih0, w_hh0 = lstm.weight_ih_l0.float(), lstm.weight_hh_l0.float()
            b0 = (lstm.bias_ih_l0 + lstm.bias_hh_l0).float()
            # One row per token: its whole first-layer input contribution, biases included.
            self.input_table = (model.embed.weight.float() @ w_ih0.t() + b0).contiguous()
            self.cells = [_Linear(w_hh0, torch.zeros_like(b0), quantize)]
            for layer in range(1, self.layers):
                w = torch.cat([getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")], dim=1)
                b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
                self.cells.append(_Linear(w, b, quantize))
            self.head = _Linear(model.head.weight, model.head.bias, quantize)
        self.device = device

    def zero_state(self, batch: int) -> State:
        z = torch.zeros(self.layers, batch, self.hidden, device=self.device)
        return z, z.clone()

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """tokens (batch,) -> logits (batch, vocab) and the new state."""
        hs, cs = state
        new_h, new_c = [], []
        x = None
        for layer, cell in enumerate(self.cells):
            if layer == 0:
                gates = (
                    self.input_table[tokens] + cell(hs[0])
                    if self.quantized
                    else torch.addmm(self.input_table[tokens], hs[0], cell.weight_t)
                )
            else:
                gates = cell(torch.cat([x, hs[layer]], dim=1))
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * cs[layer] + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(c)
            new_h.append(x)
            new_c.append(c)
        return self.head(x), (torch.stack(new_h), torch.stack(new_c))
