"""HyenaDNA modules: filter cache, length limits, filter truncation, dtypes, streaming pieces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dnastream.models import (
    FilterLengthError,
    HyenaDNAConfig,
    HyenaDNAModel,
    HyenaFilter,
    HyenaLayerConfig,
    HyenaOperator,
)

L_MAX = 64


def tiny_config(**changes) -> HyenaDNAConfig:
    layer = HyenaLayerConfig(l_max=L_MAX, emb_dim=5, filter_order=16, w=10)
    config = HyenaDNAConfig(
        d_model=16, n_layer=2, vocab_size=12, d_inner=32, pad_vocab_size_multiple=8, layer=layer
    )
    return config.replace(**changes)


def tiny_model(seed: int = 0, **changes) -> HyenaDNAModel:
    torch.manual_seed(seed)
    model = HyenaDNAModel(tiny_config(**changes)).eval()
    with torch.no_grad():  # make the filters non-trivial
        for block in model.blocks:
            block.mixer.filter.freq.add_(torch.randn(16))
            block.mixer.filter.bias.mul_(0.5)
    return model


def ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 12, (batch, length), generator=torch.Generator().manual_seed(seed))


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


# -- filter cache ------------------------------------------------------------------------------


def test_filter_materialised_once_per_length(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    calls: list[int] = []
    original = HyenaFilter.compute_kernel

    def counting(self: HyenaFilter, taps: int) -> torch.Tensor:
        calls.append(taps)
        return original(self, taps)

    monkeypatch.setattr(HyenaFilter, "compute_kernel", counting)
    x = ids(2, 40)
    with torch.inference_mode():
        first = model(x).last_hidden_state
        second = model(x).last_hidden_state
    assert calls == [40, 40] and torch.equal(first, second)
    with torch.inference_mode():
        model(ids(1, 30))
    assert calls == [40, 40, 30, 30]


def test_filter_cache_invalidation() -> None:
    filt = tiny_model().blocks[0].mixer.filter
    with torch.no_grad():
        a = filt.fft_filters(50)
        assert filt.fft_filters(50) is a
        k0 = a[0].k.clone()
        filt.freq.add_(0.25)  # in-place update (as an optimizer step does)
        b = filt.fft_filters(50)
        assert b is not a and not torch.equal(b[0].k, k0)
        filt.load_state_dict(filt.state_dict())  # copy_ bumps the versions
        assert filt.fft_filters(50) is not b
        c = filt.fft_filters(50)
        filt.modulation_shift = 0.0
        d = filt.fft_filters(50)
        assert d is not c and not torch.equal(d[0].k, c[0].k)
        filt.mlp[0].weight.data = filt.mlp[0].weight.data + 1.0  # new storage
        assert filt.fft_filters(50) is not d
        e = filt.fft_filters(50)
        assert filt.fft_filters(49) is not e  # other length
        filt.double()
        assert filt.fft_filters(50)[0].k.dtype == torch.float64


def test_filter_not_cached_in_training_or_with_grad() -> None:
    filt = tiny_model().blocks[0].mixer.filter
    kernel = filt.fft_filters(20)[0].k  # eval, grad enabled, params require grad
    assert kernel.requires_grad and filt._cache is None
    filt.train()
    with torch.no_grad():
        assert filt.fft_filters(20) is not filt.fft_filters(20)
    assert filt._cache is None


def test_gradients_reach_filter_parameters() -> None:
    model = tiny_model().train()
    model(ids(2, 33), return_logprobs=True).next_token_logprobs.sum().backward()
    filt = model.blocks[0].mixer.filter
    for p in (filt.freq, filt.bias, filt.mlp[0].weight, filt.mlp[-1].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


# -- lengths and filter truncation ------------------------------------------------------------


def test_too_long_input_names_filter_len() -> None:
    model = tiny_model()
    model(ids(1, L_MAX))  # l_max itself is fine
    with pytest.raises(FilterLengthError, match="filter_len") as info:
        model(ids(1, L_MAX + 1))
    assert f"l_max={L_MAX}" in str(info.value)
    with pytest.raises(ValueError, match="filter_len"):
        tiny_config(filter_len=L_MAX + 1)


def direct_operator(op: HyenaOperator, u: torch.Tensor, taps: int) -> torch.Tensor:
    """Operator output with explicit loops: first ``taps`` taps of the full l_max filter."""
    seq_len, d = u.shape[1], op.d_model
    z = op.in_proj(u).transpose(1, 2).double()
    w = op.short_conv.weight.double()
    width = w.shape[1]
    z = F.conv1d(z, w[:, None], op.short_conv.bias.double(), padding=width - 1, groups=z.shape[1])
    x0, x1, v = z[..., :seq_len].split(d, dim=1)
    k = op.filter.compute_kernel(op.filter.l_max)[:, :taps].double()
    g = x1 * v
    y = op.filter.bias.double()[:, None] * g
    for j in range(min(taps, seq_len)):
        y = y + k[:, j : j + 1] * F.pad(g[..., : seq_len - j], (j, 0))
    return op.out_proj((y * x0).transpose(1, 2).to(u.dtype))


@pytest.mark.parametrize(("taps", "seq_len"), [(16, 150), (1, 40), (L_MAX, 3 * L_MAX)])
def test_filter_len_truncation_equals_direct(taps: int, seq_len: int) -> None:
    model = tiny_model(filter_len=taps).double()
    op = model.blocks[0].mixer
    u = torch.randn(2, seq_len, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert rel_err(op(u), direct_operator(op, u, taps)) < 1e-12
        out = model(ids(2, seq_len)).last_hidden_state
    assert out.shape == (2, seq_len, 16) and torch.isfinite(out).all()


def test_filter_len_receptive_field() -> None:
    """With K taps and width-W short convs, a token influences only 2 (K + W - 2) later places."""
    taps = 8
    model = tiny_model(filter_len=taps).double()
    a = ids(1, 200)
    b = a.clone()
    b[0, 50] = (b[0, 50] + 1) % 12
    with torch.no_grad():
        ya, yb = model(a).last_hidden_state, model(b).last_hidden_state
    changed = (ya - yb).abs().amax(dim=-1)[0] > 1e-9  # FFT rounding spreads ~1e-16 everywhere
    reach = 2 * (taps + 3 - 2)
    assert not changed[:50].any() and changed[50] and not changed[50 + reach + 1 :].any()
    assert changed[50 + reach]


def test_filter_len_at_least_length_is_exact() -> None:
    full, trunc = tiny_model(), tiny_model(filter_len=40)
    x = ids(2, 40)
    with torch.no_grad():
        assert torch.equal(full(x).logits, trunc(x).logits)
        assert not torch.equal(full(ids(2, 60)).logits, trunc(ids(2, 60)).logits)
    trunc.set_filter_len(None)
    with torch.no_grad():
        assert torch.equal(full(ids(2, 60)).logits, trunc(ids(2, 60)).logits)


def test_causality() -> None:
    model = tiny_model()
    x = ids(1, 50)
    with torch.no_grad():
        whole = model(x).logits
        prefix = model(x[:, :30]).logits
    assert rel_err(prefix, whole[:, :30]) < 1e-5


# -- streaming pieces --------------------------------------------------------------------------


def test_operator_pieces_stream_exactly() -> None:
    """Chunked run with explicit left context (W - 1 short, K - 1 long) equals the whole run."""
    taps = 12
    op = tiny_model(filter_len=taps).double().blocks[1].mixer
    gen = torch.Generator().manual_seed(4)
    u = torch.randn(2, 100, 16, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        whole = op(u)
        short_state = torch.zeros(2, 48, op.short_conv.width - 1, dtype=torch.float64)
        long_ctx = torch.zeros(2, 16, 0, dtype=torch.float64)
        outs = []
        for chunk in u.split([1, 5, 11, 40, 43], dim=1):
            raw = op.project_in(chunk)
            z = op.short_filter(raw, short_state)
            short_state = torch.cat([short_state, raw], dim=-1)[..., -(op.short_conv.width - 1) :]
            xs, v = op.split(z)
            y = op.long_conv(xs, v, op.filter.fft_filters(taps), contexts=[long_ctx])
            long_ctx = torch.cat([long_ctx, xs[1] * v], dim=-1)[..., -(taps - 1) :]
            outs.append(op.project_out(y))
    assert rel_err(torch.cat(outs, dim=1), whole) < 1e-12


# -- dtypes and outputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 0.1)]
)
def test_dtypes(dtype: torch.dtype, tol: float) -> None:
    ref_model = tiny_model().double()
    model = tiny_model().to(dtype)
    x = ids(2, 50)
    with torch.inference_mode():
        ref = ref_model(x, output_layers=[0, -1], return_logprobs=True)
        out = model(x, output_layers=[0, -1], return_logprobs=True)
    assert out.last_hidden_state.dtype == dtype and out.logits.dtype == dtype
    residual_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.hidden_states[0].dtype == residual_dtype and set(out.hidden_states) == {0, 1}
    assert out.next_token_logprobs.dtype == residual_dtype
    assert rel_err(out.last_hidden_state, ref.last_hidden_state) < tol
    assert rel_err(out.next_token_logprobs, ref.next_token_logprobs) < tol


def test_outputs_and_logprobs_consistent() -> None:
    model = tiny_model()
    x = ids(3, 21)
    with torch.no_grad():
        out = model(x, return_logprobs=True)
    assert out.logits.shape == (3, 21, 16) and out.next_token_logprobs.shape == (3, 20)
    manual = torch.log_softmax(out.logits[:, :-1], -1).gather(-1, x[:, 1:, None])[..., 0]
    assert torch.allclose(out.next_token_logprobs, manual)
    assert model.tied and torch.equal(out.logits, out.last_hidden_state @ model.embedding.weight.T)
    plain = model(x, return_logits=False)
    assert plain.logits is None and plain.next_token_logprobs is None and not plain.hidden_states


def test_input_validation() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 16\)"):
        model(torch.tensor([[0, 16]]))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        model(ids(1, 4), output_layers=[2])


def test_shift_setting_changes_filters() -> None:
    model = tiny_model()
    x = ids(1, 30)
    with torch.no_grad():
        a = model(x).logits
        model.set_modulation_shift(0.0)
        b = model(x).logits
    assert model.config.modulation_shift == 0.0 and not torch.allclose(a, b)
    assert all(blk.mixer.filter.modulation_shift == 0.0 for blk in model.blocks)


def test_gradient_checkpointing_gives_the_same_gradients(hyenadna_fixtures):
    from dnastream.models import load_model

    fixtures = hyenadna_fixtures
    ids = torch.randint(7, 12, (2, 300), generator=torch.Generator().manual_seed(0))
    grads = []
    for recompute in (False, True):
        model = load_model(fixtures / "hf_tiny", dtype=torch.float64).train()
        model.gradient_checkpointing = recompute
        torch.manual_seed(0)  # same dropout masks (checkpoint replays the RNG state)
        model(ids, return_logprobs=True).next_token_logprobs.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-10, atol=1e-12), name


def test_bf16_autocast_runs_ffts_in_float32(hyenadna_fixtures):
    from dnastream.models import load_model

    fixtures = hyenadna_fixtures
    model = load_model(fixtures / "hf_tiny").eval()
    ids = torch.randint(7, 12, (1, 500), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(ids).last_hidden_state
    assert low.dtype == torch.float32  # ln_f output in float32
    err = ((low - ref).norm() / ref.norm()).item()
    assert 1e-5 < err < 3e-2  # bf16 matmuls change the numbers, but only at bf16 precision
