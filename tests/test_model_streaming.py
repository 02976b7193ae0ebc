"""Exact streaming: chunk-by-chunk outputs equal a whole-sequence forward with the same filters."""

from __future__ import annotations

import pytest
import torch

from dnastream.models import FilterLengthError, load_model
from dnastream.models.streaming import StreamingHyenaDNA


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def tiny_dir(hyenadna_fixtures):
    return hyenadna_fixtures / "hf_tiny"


def _stream(model, ids, chunk, **kw):
    eng = StreamingHyenaDNA(model)
    return eng, list(eng.run(ids.split(chunk, dim=1), **kw))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize(
    "filter_len, chunk", [(64, 1), (64, 37), (300, 137), (300, 1000), (1026, 250)]
)
def test_streaming_equals_full_forward(tiny_dir, dtype, tol, filter_len, chunk):
    model = load_model(tiny_dir, filter_len=filter_len, dtype=dtype).eval()
    gen = torch.Generator().manual_seed(filter_len + chunk)
    length = 1200 if chunk > 1 else 200
    ids = torch.randint(7, 12, (2, length), generator=gen)
    with torch.no_grad():
        full = model(ids, output_layers=[0, 1], return_logprobs=True)
    _, outs = _stream(model, ids, chunk, output_layers=[0, 1], return_logprobs=True)
    assert [o.start for o in outs] == list(range(0, length, chunk))
    hidden = torch.cat([o.last_hidden_state for o in outs], dim=1)
    assert hidden.shape == full.last_hidden_state.shape
    assert _rel(hidden, full.last_hidden_state) <= tol
    for layer in (0, 1):
        h = torch.cat([o.hidden_states[layer] for o in outs], dim=1)
        assert _rel(h, full.hidden_states[layer]) <= tol
    logp = torch.cat([o.token_logprobs for o in outs], dim=1)
    assert torch.isnan(logp[:, 0]).all()
    assert (logp[:, 1:] - full.next_token_logprobs).abs().max().item() <= 10 * tol


def test_streaming_state_is_bounded_by_filter_length(tiny_dir):
    model = load_model(tiny_dir, filter_len=100).eval()
    eng = StreamingHyenaDNA(model)
    eng.reset(1)
    sizes = []
    for i in range(6):
        eng.step(torch.full((1, 64), 7 + i % 4))
        sizes.append(eng.state.nbytes())
    # grows until K - 1 = 99 columns are held, then stays flat
    assert sizes[2] == sizes[3] == sizes[5]
    assert all(t.shape[-1] == 99 for layer in eng.state.layers for t in layer.long)
    assert eng.state.position == 6 * 64


def test_streaming_window_matches_forward_on_receptive_field(tiny_dir):
    """Outputs deep inside a long stream equal a full forward over their receptive field."""
    k = 80
    model = load_model(tiny_dir, filter_len=k, dtype=torch.float64).eval()
    ids = torch.randint(7, 12, (1, 3000), generator=torch.Generator().manual_seed(3))
    _, outs = _stream(model, ids, 256)
    hidden = torch.cat([o.last_hidden_state for o in outs], dim=1)
    field = model.config.n_layer * ((k - 1) + 2)  # long conv K-1 and short conv W-1 per block
    a, b = 2000, 2300
    with torch.no_grad():
        local = model(ids[:, a - field : b]).last_hidden_state[:, field:]
    assert _rel(hidden[:, a:b], local) <= 1e-12
    with torch.no_grad():  # one position less of context changes the first output
        short = model(ids[:, a - 2 : b]).last_hidden_state[:, 2:]
    assert _rel(hidden[:, a:b], short) > 1e-9


def test_longer_than_lmax_needs_filter_len(tiny_dir):
    model = load_model(tiny_dir).eval()
    ids = torch.full((1, model.config.layer.l_max + 1), 7)
    with pytest.raises(FilterLengthError, match="filter_len"):
        model(ids)
    model.set_filter_len(512)
    with torch.no_grad():
        out = model(ids)
    assert out.last_hidden_state.shape[1] == ids.shape[1]


def test_batch_size_change_needs_reset(tiny_dir):
    eng = StreamingHyenaDNA(load_model(tiny_dir, filter_len=32).eval())
    eng.reset(2)
    eng.step(torch.full((2, 10), 8))
    with pytest.raises(ValueError, match="reset"):
        eng.step(torch.full((1, 10), 8))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_tiled_inference_equals_plain_forward(tiny_dir, monkeypatch, dtype, tol):
    """The lean no-grad path (position-wise work in tiles) gives the plain forward's numbers."""
    import dnastream.models.hyenadna as hy

    model = load_model(tiny_dir, filter_len=200, dtype=dtype).eval()
    ids = torch.randint(7, 12, (2, 301), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        plain = model(ids, output_layers=[0, 1], return_logprobs=True)
        monkeypatch.setattr(hy, "TILED_INFERENCE_TOKENS", 0)
        for tile in (1, 97, 4096):
            monkeypatch.setattr(hy, "INFERENCE_TILE", tile)
            lean = model(ids, output_layers=[0, 1], return_logprobs=True)
            assert _rel(lean.last_hidden_state, plain.last_hidden_state) <= tol
            for i in (0, 1):
                assert _rel(lean.hidden_states[i], plain.hidden_states[i]) <= tol
            assert _rel(lean.next_token_logprobs, plain.next_token_logprobs) <= tol
