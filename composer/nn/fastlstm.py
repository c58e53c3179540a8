"""A fused, step-at-a-time LSTM for sampling, built from a trained PerformanceRNN.

Sampling runs the network one event at a time, where ``nn.LSTM``'s per-call overhead
dominates. Here the weights are pre-packed once: the first layer's input projection
becomes a lookup table (embedding x input weights + both biases, one row per token), and
each deeper layer multiplies ``[input, hidden]`` by one stacked matrix.

The matrices can be held three ways (``weights=``):
- ``fp32``: plain ``addmm``. BLAS picks its kernel by the number of rows (one row takes
  gemv; on AMD CPUs 17 rows or more take another GEMM kernel than 2-16 do), so on a CPU
  the batch is stepped in blocks of exactly ``ROW_BLOCK`` rows, the last one padded:
  every product has the same shape whatever the batch, and a row's numbers are its own.
- ``fp16``: fbgemm's fp16-weight GEMM with float32 activations. Exact for our fp16-stored
  weights, half the bytes per step. Stepped in ``ROW_BLOCK`` rows too: on CPUs with AVX2
  but no AVX-512, fbgemm's fp16 kernel rounds a row differently for 1, 2 or 7 rows than
  for 3-6 or 8-16 (a row's place within a block of fixed size does not matter).
- ``int8``: fbgemm int8 weights (per output channel) and int8 activations, a quarter of
  the bytes: the fastest here, alone and in batches. fbgemm picks the activations' scale
  from the whole input's range; every input is an LSTM output in [-1, 1], so two anchor
  columns holding -1 and 1 (against zero weights) make that scale a constant, and a row's
  integer products are its own: batch-invariant too.
- ``half``: float16 weights and matrix products (tensor cores on a GPU, where this is
  the default), gates and state in float32. On a CPU it works but is slow; cuBLAS may
  pick another kernel for another batch size, so on a GPU a replayed seed is only
  expected, not guaranteed, to give the identical piece.
- ``int8w``: int8 weights only (per output channel), bf16 activations, through
  ``torch._weight_int8pack_mm``: batch-invariant and 1.4x fp16 for one stream here, but
  half fp16's speed at batch 64.
"""

from __future__ import annotations

import warnings

import torch

from composer.nn.model import PerformanceRNN, no_control

State = tuple[torch.Tensor, torch.Tensor]  # h and c, each (layers, batch, hidden), as nn.LSTM keeps them
WEIGHTS = ("fp32", "fp16", "int8", "int8w", "half")
ROW_BLOCK = 16


class _Linear:
    """y = x @ W^T + b with the weights held as fp32, fbgemm fp16 or fbgemm int8."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, weights: str):
        self.weights = weights
        weight, bias = weight.float().contiguous(), bias.float().contiguous()
        if weights == "int8":
            weight = torch.cat([weight, torch.zeros(weight.shape[0], 2)], dim=1)  # the anchor columns' (see __call__)
            scales = weight.abs().amax(dim=1).clamp_min(1e-8) / 127.0
            zero = torch.zeros(weight.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # qint8 tensor creation is marked deprecated, still the fbgemm path
                warnings.simplefilter("ignore", UserWarning)
                qweight = torch.quantize_per_channel(weight, scales.double(), zero, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qweight, bias)
            self.anchors: dict[int, torch.Tensor] = {}  # batch size -> its anchor columns
        elif weights == "fp16":
            self.packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)
        elif weights == "half":
            self.weight_t = weight.t().contiguous().half()
            self.bias = bias.half()
        elif weights == "int8w":
            scales = weight.abs().amax(dim=1).clamp_min(1e-8) / 127.0
            self.qweight = torch.round(weight / scales[:, None]).to(torch.int8).contiguous()
            self.scales = scales.bfloat16()
            self.bias = bias
        else:
            self.weight_t = weight.t().contiguous()
            self.bias = bias

    def __call__(self, *parts: torch.Tensor) -> torch.Tensor:
        """The product of the row-wise concatenation of ``parts``."""
        if self.weights == "int8":
            # fbgemm quantizes the input with one scale from its min and max. Every input here is an
            # LSTM output, within [-1, 1]: anchor columns holding -1 and 1 in every row pin that scale,
            # whatever the batch, so each row's integer product, and its result, is its own. Their
            # weights are zero, so they add nothing to the product.
            batch = parts[0].shape[0]
            anchor = self.anchors.get(batch)
            if anchor is None:
                anchor = self.anchors[batch] = torch.tensor([[-1.0, 1.0]], device=parts[0].device).repeat(batch, 1)
            x = torch.cat([*parts, anchor], dim=1)
            return torch.ops.quantized.linear_dynamic(x, self.packed)
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if self.weights == "fp16":
            return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)
        if self.weights == "half":
            return torch.addmm(self.bias, x.half(), self.weight_t).float()
        if self.weights == "int8w":
            return torch._weight_int8pack_mm(x.bfloat16(), self.qweight, self.scales).float() + self.bias
        return torch.addmm(self.bias, x, self.weight_t)


def quantization_available() -> bool:
    """Whether fbgemm's packed fp16/int8 kernels exist here (x86 CPUs)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


class FusedLSTM:
    """The same function as ``PerformanceRNN`` for one step at a time, with less overhead."""

    def __init__(self, model: PerformanceRNN, weights: str = "fp32"):
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}")
        device = next(model.parameters()).device
        if weights in ("fp16", "int8"):
            if device.type != "cpu" or not quantization_available():
                raise ValueError(f"{weights} weights need fbgemm on an x86 CPU")
            torch.backends.quantized.engine = "fbgemm"
        lstm = model.lstm
        self.hidden = lstm.hidden_size
        self.layers = lstm.num_layers
        self.weights = weights
        # BLAS's and fbgemm fp16's kernels, and so a row's last bits, depend on the row count:
        # fixed-size blocks on a CPU.
        self.row_block = ROW_BLOCK if weights in ("fp32", "fp16") and device.type == "cpu" else 0
        # nn.LSTM stacks its gates i, f, g, o; held as i, f, o, g, one sigmoid covers three of them.
        h = self.hidden
        order = torch.cat([torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)])
        embed_dim = model.embed.embedding_dim
        with torch.no_grad():
            w_ih0, w_hh0 = lstm.weight_ih_l0.float()[order], lstm.weight_hh_l0.float()[order]
            b0 = (lstm.bias_ih_l0 + lstm.bias_hh_l0).float()[order]
            # One row per token: its whole first-layer input contribution, biases included.
            self.input_table = (model.embed.weight.float() @ w_ih0[:, :embed_dim].t() + b0).contiguous()
            # A conditioned model's controls enter the first layer beside the token (see control_gates).
            self.control_weight = w_ih0[:, embed_dim:].t().contiguous() if w_ih0.shape[1] > embed_dim else None
            # What "no control" adds: a conditioned model stepped without controls must see the
            # no-control flags it was trained with, not zeros.
            self.no_control_gates = (
                torch.as_tensor(no_control(w_ih0.shape[1] - embed_dim), device=device)[None] @ self.control_weight
                if self.control_weight is not None
                else None
            )
            self.cells = [_Linear(w_hh0, torch.zeros_like(b0), weights)]
            for layer in range(1, self.layers):
                w = torch.cat([getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")], dim=1)
                b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
                self.cells.append(_Linear(w[order], b[order], weights))
            self.head = _Linear(model.head.weight, model.head.bias, weights)
        self.device = device

    def zero_state(self, batch: int) -> State:
        z = torch.zeros(self.layers, batch, self.hidden, device=self.device)
        return z, z.clone()

    @torch.inference_mode()
    def control_gates(self, controls: torch.Tensor) -> torch.Tensor | None:
        """What (batch, control_dim) controls add to the first layer's gates: one product per piece,
        since a piece keeps its controls; None for an unconditioned model."""
        if self.control_weight is None:
            return None
        return controls.to(self.device, torch.float32) @ self.control_weight

    @torch.inference_mode()
    def step(
        self, tokens: torch.Tensor, state: State, control_gates: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """tokens (batch,) -> logits (batch, vocab) and the new state; ``control_gates`` from control_gates()
        (none: "no control" for a conditioned model)."""
        if control_gates is None and self.no_control_gates is not None:
            control_gates = self.no_control_gates.expand(tokens.shape[0], -1)
        if not self.row_block:
            return self._step(tokens, state, control_gates)
        h, c = state
        block, logits, hs, cs = self.row_block, [], [], []
        for start in range(0, tokens.shape[0], block):
            rows = slice(start, start + block)
            t_, h_, c_ = tokens[rows], h[:, rows], c[:, rows]
            g_ = control_gates[rows] if control_gates is not None else None
            n = t_.shape[0]
            if n < block:  # padded with copies of its first row, dropped again below
                pad = block - n
                t_ = torch.cat([t_, t_[:1].expand(pad)])
                h_ = torch.cat([h_, h_[:, :1].expand(-1, pad, -1)], dim=1)
                c_ = torch.cat([c_, c_[:, :1].expand(-1, pad, -1)], dim=1)
                if g_ is not None:
                    g_ = torch.cat([g_, g_[:1].expand(pad, -1)])
            out, (h2, c2) = self._step(t_, (h_, c_), g_)
            logits.append(out[:n])
            hs.append(h2[:, :n])
            cs.append(c2[:, :n])
        if len(logits) == 1:
            return logits[0], (hs[0], cs[0])
        return torch.cat(logits), (torch.cat(hs, dim=1), torch.cat(cs, dim=1))

    def _step(
        self, tokens: torch.Tensor, state: State, control_gates: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        hs, cs = state
        new_h, new_c = [], []
        x = None
        for layer, cell in enumerate(self.cells):
            if layer == 0:
                rows = self.input_table.index_select(0, tokens)  # a plain row gather, cheaper than [tokens]
                if control_gates is not None:
                    rows = rows + control_gates
                gates = torch.addmm(rows, hs[0], cell.weight_t) if self.weights == "fp32" else rows + cell(hs[0])
            else:
                gates = cell(x, hs[layer])
            ifo = torch.sigmoid(gates[:, : 3 * self.hidden])
            g = torch.tanh(gates[:, 3 * self.hidden :])
            i, f, o = ifo.chunk(3, dim=1)
            c = torch.addcmul(f * cs[layer], i, g)
            x = o * torch.tanh(c)
            new_h.append(x)
            new_c.append(c)
        return self.head(x), (torch.stack(new_h), torch.stack(new_c))
