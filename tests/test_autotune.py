"""Per-GPU plan autotuning (``dnastream.kernels.autotune``): keys, the cache file, the search.

Runs on the CPU: the Triton kernels run in the interpreter (conftest), the device id is then
``cpu|triton-<version>``, and the search is driven by fake timers so it is deterministic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import torch

from dnastream.kernels import autotune
from dnastream.kernels.fftconv_triton import fftconv_triton, filter_spectrum
from dnastream.kernels.monarch import FFTPlan, plan_for

BF16 = torch.bfloat16
BARS = {torch.bfloat16: 3e-3, torch.float16: 3e-3, torch.float32: 1e-5}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """A private, empty cache folder and fresh in-memory state for every test."""
    monkeypatch.setenv("DNASTREAM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DNASTREAM_AUTOTUNE", raising=False)
    autotune.clear_memory()
    yield tmp_path
    autotune.clear_memory()


def inputs(B, H, L, dtype=BF16, gated=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(B, H, L, generator=g).to(dtype)
    k = torch.randn(H, L, generator=g) / math.sqrt(L)
    gate = torch.randn(B, H, L, generator=g).to(dtype) if gated else None
    return u, k, gate


def ref64(u, k, g1=None, g2=None, causal=True):
    return autotune._ref64(u, k, g1, g2, causal)


def rel_err(a, b) -> float:
    return autotune._rel_err(a, b.double())


CPU = autotune.device_id("cpu")


# ---------------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------------


def test_key_is_stable_and_buckets_batch() -> None:
    key = autotune.plan_key(100, 100, True, BF16, 3, False)
    assert key == "N256|16x16|outer-|causal|bfloat16|plain|B4"
    # same FFT (N = 256), same bucket (B 3 and 4): same key, whatever L and Lk
    assert autotune.plan_key(120, 50, True, BF16, 4, False) == key
    assert autotune.plan_key(100, 100, True, BF16, 5, False).endswith("|B8")
    assert autotune.plan_key(100, 100, True, BF16, 1, False).endswith("|B1")
    big = autotune.plan_key(100, 100, True, BF16, 1000, False)
    assert big == autotune.plan_key(100, 100, True, BF16, 64, False) and big.endswith("|B64")
    others = {
        autotune.plan_key(300, 300, True, BF16, 3, False),  # N = 1024
        autotune.plan_key(100, 100, True, torch.float16, 3, False),
        autotune.plan_key(100, 100, True, torch.float32, 3, False),
        autotune.plan_key(100, 100, True, BF16, 3, True),
        autotune.plan_key(256, 100, False, BF16, 3, False),
    }
    assert key not in others and len(others) == 5
    assert autotune.plan_key(300, 100, False, BF16, 3, False) is None  # no circular plan
    assert [autotune.batch_bucket(b) for b in (0, 1, 2, 3, 5, 64, 65, 10**6)] == [
        1, 1, 2, 4, 8, 64, 64, 64,
    ]  # fmt: skip


def test_one_key_has_one_default_launch() -> None:
    """Everything that sets plan_for's launch fields is in the key."""
    by_key: dict[str, dict] = {}
    for L in (50, 100, 128, 200, 300, 600, 1000):
        for Lk in (3, L):
            for B in range(1, 70, 3):
                for dt in (BF16, torch.float32):
                    plan = plan_for(L, Lk, True, dt, batch=B)
                    key = autotune.plan_key_for(plan, dt, B, False)
                    fields = autotune.launch_fields(plan)
                    assert by_key.setdefault(key, fields) == fields, key


# ---------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------


def test_empty_cache_gives_the_default_plan(cache_dir) -> None:
    plan = autotune.tuned_plan(100, 100, True, BF16, batch=2, gated=False, device="cpu")
    assert plan == plan_for(100, 100, True, BF16, batch=2)
    assert autotune.tuned_plan(300, 100, False, BF16, batch=2, gated=False, device="cpu") is None
    assert not (cache_dir / autotune.CACHE_FILE).exists()


def test_stored_entry_is_applied_and_round_trips(cache_dir) -> None:
    key = autotune.plan_key(100, 100, True, BF16, 2, False)
    autotune.store(CPU, key, {"num_warps": 8, "ctas_per_sm": 3, "maxnreg": 128, "ms": 0.5})
    default = plan_for(100, 100, True, BF16, batch=2)
    want = dataclasses.replace(default, num_warps=8, ctas_per_sm=3, maxnreg=128)
    got = autotune.tuned_plan(100, 100, True, BF16, batch=2, gated=False, device="cpu")
    assert got == want
    # other keys (gated, another batch bucket, another GPU) keep their defaults
    assert autotune.tuned_plan(100, 100, True, BF16, batch=2, gated=True, device="cpu") == default
    assert autotune.tuned_plan(100, 100, True, BF16, batch=3, gated=False, device="cpu") != want
    data = json.loads((cache_dir / autotune.CACHE_FILE).read_text())
    assert data["_version"] == autotune.CACHE_VERSION
    assert data[CPU][key] == {"num_warps": 8, "ctas_per_sm": 3, "maxnreg": 128, "ms": 0.5}
    autotune.clear_memory()  # a new process: read back from the file
    got = autotune.tuned_plan(110, 90, True, BF16, batch=2, gated=False, device="cpu")
    assert got == dataclasses.replace(
        plan_for(110, 90, True, BF16, batch=2), num_warps=8, ctas_per_sm=3, maxnreg=128
    )


def test_file_is_read_once_and_lookups_are_memoised(monkeypatch) -> None:
    calls = []
    real = autotune._read_file
    monkeypatch.setattr(autotune, "_read_file", lambda p: calls.append(p) or real(p))
    first = autotune.tuned_plan(100, 100, True, BF16, batch=2, gated=False, device="cpu")
    for L in (100, 101, 120):
        autotune.tuned_plan(L, 100, True, BF16, batch=2, gated=False, device="cpu")
    assert autotune.tuned_plan(100, 100, True, BF16, batch=2, gated=False, device="cpu") is first
    assert len(calls) == 1


@pytest.mark.parametrize(
    "text", ["{not json", "[1, 2]", '{"_version": 99, "x": {}}', '{"cpu": {}}']
)
def test_corrupt_or_unknown_file_warns_and_gives_defaults(cache_dir, text) -> None:
    path = cache_dir / autotune.CACHE_FILE
    path.write_text(text)
    with pytest.warns(UserWarning, match="ignoring"):
        plan = autotune.tuned_plan(100, 100, True, BF16, batch=2, gated=False, device="cpu")
    assert plan == plan_for(100, 100, True, BF16, batch=2)
    # writing over it starts a fresh, valid file
    with pytest.warns(UserWarning, match="ignoring"):
        autotune.store(CPU, "k", {"num_warps": 8})
    assert json.loads(path.read_text()) == {"_version": 1, CPU: {"k": {"num_warps": 8}}}


def test_backward_fields_apply_only_from_backward_tunings() -> None:
    """A forward-only tuning stores the backward settings of its day; they must not pin them
    once plan_for's defaults change (the shipped 32K entries held the one-row filter gradient
    that stop 17 replaced). An entry whose backward was tuned (``bwd_ms``) applies them."""
    default = plan_for(1 << 14, 1 << 14, True, BF16, batch=16)  # radix 16 over 2048 points
    assert default.shared_bwd_outer and default.bwd_rows == 0
    stale = {"bwd_rows": 1, "shared_bwd_outer": False, "bwd_warps": 8, "outer_ctas_per_sm": 3}
    got = autotune.apply_entry(default, {**stale, "ms": 4.4, "default_ms": 4.6})
    assert got == dataclasses.replace(default, outer_ctas_per_sm=3)
    got = autotune.apply_entry(default, {**stale, "bwd_ms": 16.0, "bwd_default_ms": 17.0})
    assert got == dataclasses.replace(default, bwd_rows=1, shared_bwd_outer=False, bwd_warps=8,
                                      outer_ctas_per_sm=3)  # fmt: skip
    # the shipped H100 entries of the 32K plans keep plan_for's backward
    gpu = "NVIDIA H100 80GB HBM3|sm90|triton-3.6.0"
    for causal in (True, False):
        seq = 1 << (14 if causal else 15)
        plan = plan_for(seq, seq, causal, BF16, batch=16)
        entry = autotune.packaged_entry(gpu, autotune.plan_key_for(plan, BF16, 16, False))
        assert entry is not None and "bwd_ms" not in entry
        tuned = autotune.apply_entry(plan, entry)
        assert tuned.outer_ctas_per_sm == 3
        assert (tuned.bwd_rows, tuned.shared_bwd_outer) == (plan.bwd_rows, plan.shared_bwd_outer)


def test_non_whitelisted_and_invalid_fields_are_ignored() -> None:
    default = plan_for(100, 100, True, BF16, batch=2)
    forbidden = {"n": 512, "n1": 32, "n2": 8, "outer": [16], "io_rows": 4, "causal": False,
                 "seq_len": 7, "taps": 1, "mma": "tf32x3", "_strides": [1]}  # fmt: skip
    got = autotune.apply_entry(default, {**forbidden, "num_warps": 8, "ms": 1.0})
    assert got == dataclasses.replace(default, num_warps=8)
    bad_values = {"num_warps": "8", "maxnreg": 7, "chunk": 64, "ctas_per_sm": 0,
                  "hoist": 1, "rows": 2.0, "outer_warps": 3, "num_stages": True}  # fmt: skip
    assert autotune.apply_entry(default, bad_values) == default
    with pytest.warns(UserWarning, match="ignoring stored settings"):
        assert autotune.apply_entry(default, {"rows": 3, "num_warps": 8}) == default
    with pytest.warns(UserWarning, match="ignoring stored settings"):
        assert autotune.apply_entry(default, {"outer_block": 48}) == default
    # through the file as well
    key = autotune.plan_key(100, 100, True, BF16, 2, False)
    autotune.store(CPU, key, {"n": 512, "mma": "tf32x3", "rows": 3})
    with pytest.warns(UserWarning, match="ignoring stored settings"):
        plan = autotune.tuned_plan(100, 100, True, BF16, batch=2, gated=False, device="cpu")
    assert plan == default


def test_writers_merge_and_writes_are_atomic(cache_dir, monkeypatch) -> None:
    path = cache_dir / autotune.CACHE_FILE
    # writer A loads the (empty) cache, writer B (another process) then stores an entry
    autotune.lookup(CPU, "a")
    stale = dict(autotune._FILES)
    autotune.clear_memory()
    autotune.store(CPU, "b", {"num_warps": 8})
    autotune._FILES.clear()
    autotune._FILES.update(stale)  # back to A's stale view
    autotune.store(CPU, "a", {"num_warps": 4})
    data = json.loads(path.read_text())
    assert data[CPU] == {"a": {"num_warps": 4}, "b": {"num_warps": 8}}
    assert autotune.lookup(CPU, "b") == {"num_warps": 8}  # A now sees B's entry
    # a crashed writer's temporary file is harmless
    (cache_dir / ".fftconv_plans.x.tmp").write_text("{garbage")
    # a write that fails half-way leaves the old file whole and no temporary file behind
    before = path.read_text()

    def boom(obj, fh, **kw):
        fh.write('{"_version": 1, "half')
        raise OSError("disk full")

    with monkeypatch.context() as m, pytest.warns(UserWarning, match="could not write"):
        m.setattr(autotune.json, "dump", boom)
        autotune.store(CPU, "c", {"num_warps": 2})
    assert path.read_text() == before
    assert sorted(os.listdir(cache_dir)) == sorted(
        [autotune.CACHE_FILE, autotune.CACHE_FILE + ".lock", ".fftconv_plans.x.tmp"]
    )
    assert autotune.lookup(CPU, "c") == {"num_warps": 2}  # kept in memory for this process
    autotune.clear_memory()
    assert autotune.lookup(CPU, "c") is None and autotune.lookup(CPU, "a") == {"num_warps": 4}


# ---------------------------------------------------------------------------------------------
# the search
# ---------------------------------------------------------------------------------------------


def fake_timer(table: dict, default_ms: float = 5.0):
    """ms from the plan's fields: the first entry of ``table`` whose settings all match."""
    seen = []

    def timer(fn, plan):
        seen.append(plan)
        for ms, kw in table.items():
            if all(getattr(plan, f) == v for f, v in kw.items()):
                return ms
        return default_ms

    timer.seen = seen
    return timer


@pytest.mark.parametrize("gated", [False, True])
def test_tune_picks_the_fastest_variant_and_stores_it(cache_dir, gated) -> None:
    B, H, L = (2, 2, 100) if not gated else (4, 2, 130)
    u, k, gate = inputs(B, H, L, gated=gated)
    default = plan_for(L, L, True, BF16, batch=B)
    target = {"num_warps": 8, "maxnreg": 128, "ctas_per_sm": 3}
    timer = fake_timer({1.0: target})
    entry = autotune.tune(u, k, causal=True, pregate=gate, postgate=gate, timer=timer)
    assert {f: entry[f] for f in target} == target
    assert entry["ms"] == 1.0 and entry["default_ms"] == 5.0
    # the default, then every grid variant but the one equal to the default
    assert entry["variants"] == len(autotune.inner_grid(default))
    key = autotune.plan_key(L, L, True, BF16, B, gated)
    assert entry["key"] == key and entry["gpu"] == CPU
    stored = json.loads((cache_dir / autotune.CACHE_FILE).read_text())[CPU][key]
    assert stored["ms"] == 1.0 and stored["num_warps"] == 8
    plan = autotune.tuned_plan(L, L, True, BF16, batch=B, gated=gated, device="cpu")
    assert plan == dataclasses.replace(default, **target)
    y = fftconv_triton(u, k, pregate=gate, postgate=gate, causal=True, plan=plan)
    assert rel_err(y, ref64(u, k, gate, gate)) <= BARS[BF16]


def test_tune_keeps_the_default_when_nothing_is_faster() -> None:
    u, k, _ = inputs(2, 2, 100)
    entry = autotune.tune(u, k, causal=True, timer=fake_timer({}))
    default = plan_for(100, 100, True, BF16, batch=2)
    assert {f: entry[f] for f in autotune.LAUNCH_FIELDS} == autotune.launch_fields(default)


def test_tune_never_picks_a_wrong_or_failing_variant(monkeypatch) -> None:
    u, k, _ = inputs(4, 2, 100)  # B = 4: the rows = 2 (transposed-tile) kernel
    real = autotune._execute

    def execute(u, k, plan, spectrum, g1, g2, causal):
        if plan.ctas_per_sm == 1:
            raise RuntimeError("out of resources")
        y = real(u, k, plan, spectrum, g1, g2, causal)
        if plan.num_warps == 8 and plan.maxnreg is None:
            return y * 1.01  # 1% off: beyond the bf16 bar
        return y

    monkeypatch.setattr(autotune, "_execute", execute)
    timer = fake_timer(
        {
            0.1: {"num_warps": 8, "maxnreg": None},  # fastest but wrong
            0.2: {"ctas_per_sm": 1},  # raises
            0.5: {"num_warps": 8, "maxnreg": 128, "ctas_per_sm": 4},  # fastest correct
        }
    )
    lines: list[str] = []
    entry = autotune.tune(u, k, causal=True, timer=timer, log=lines.append)
    assert (entry["num_warps"], entry["maxnreg"], entry["ctas_per_sm"]) == (8, 128, 4)
    assert entry["ms"] == 0.5
    assert any("WRONG" in ln for ln in lines) and any("fails" in ln for ln in lines)
    assert all(not (p.num_warps == 8 and p.maxnreg is None) for p in timer.seen)


def test_tune_fp32_bar_and_circular(monkeypatch) -> None:
    """fp32 must be within 1e-5: an error of 1e-4 (fine for bf16) is rejected."""
    u, k, _ = inputs(2, 2, 256, dtype=torch.float32)
    real = autotune._execute

    def execute(u, k, plan, spectrum, g1, g2, causal):
        y = real(u, k, plan, spectrum, g1, g2, causal)
        return y * (1 + 1e-4) if plan.num_warps == 8 else y

    monkeypatch.setattr(autotune, "_execute", execute)
    timer = fake_timer({0.1: {"num_warps": 8}, 0.3: {"ctas_per_sm": 4, "maxnreg": None}})
    entry = autotune.tune(u, k[:, :40], causal=False, timer=timer)
    assert entry["num_warps"] != 8 and entry["ctas_per_sm"] == 4 and entry["ms"] == 0.3
    plan = autotune.tuned_plan(256, 40, False, torch.float32, batch=2, gated=False, device="cpu")
    assert plan.ctas_per_sm == 4 and not plan.causal
    y = fftconv_triton(u, k[:, :40], causal=False, plan=plan)
    assert rel_err(y, ref64(u, k[:, :40], causal=False)) <= BARS[torch.float32]


def test_tune_searches_outer_fields_after_inner(monkeypatch) -> None:
    """Outer-level plans: inner stage, then the outer kernels' fields on the inner winner."""
    B, H, L = 2, 1, 2000
    u, k, _ = inputs(B, H, L, dtype=torch.float32)
    base = plan_for(L, L, True, torch.float32, batch=B, max_fused=256, max_radix=16)
    assert base.kind == "outer1"
    y_ok = ref64(u, k).float()
    inner = {"num_warps": 8, "maxnreg": None, "ctas_per_sm": 2}
    outer = {"outer_warps": 8, "outer_maxnreg": 128, "outer_block": 64, "outer_ctas_per_sm": 3}
    timer = fake_timer({1.0: {**inner, **outer}, 2.0: inner})
    with monkeypatch.context() as m:
        m.setattr(autotune, "_execute", lambda *a: y_ok)  # no interpreter runs here
        entry = autotune.tune(u, k, causal=True, timer=timer, plan=base, save=False)
    assert {f: entry[f] for f in {**inner, **outer}} == {**inner, **outer}
    assert entry["variants"] == len(autotune.inner_grid(base)) + len(autotune.outer_grid(base))
    assert autotune.lookup(CPU, entry["key"]) is None  # save=False
    tuned = autotune.apply_entry(base, entry)  # the real kernels with the tuned settings
    y = fftconv_triton(u, k, causal=True, plan=tuned)
    assert rel_err(y, ref64(u, k)) <= BARS[torch.float32]


def test_tune_noise_guard_keeps_the_default() -> None:
    """A variant that was fast once but not when timed again does not replace the default."""
    u, k, _ = inputs(2, 2, 100)
    runs = {"n": 0}

    def timer(fn, plan):
        if plan.num_warps == 8 and plan.maxnreg == 128 and plan.ctas_per_sm == 3:
            runs["n"] += 1
            return 1.0 if runs["n"] == 1 else 10.0
        return 5.0

    entry = autotune.tune(u, k, causal=True, timer=timer, save=False)
    assert runs["n"] == 2 and entry["num_warps"] == 4 and entry["ms"] == entry["default_ms"]


def test_tune_budget_and_no_correct_variant(monkeypatch) -> None:
    u, k, _ = inputs(2, 2, 100)
    entry = autotune.tune(u, k, causal=True, timer=fake_timer({}), budget_s=0.0, save=False)
    assert entry["variants"] == 1  # only the default was timed
    monkeypatch.setattr(autotune, "_execute", lambda *a: torch.full_like(a[0], float("nan")))
    with pytest.warns(UserWarning, match="no correct variant"):
        assert autotune.tune(u, k, causal=True, timer=fake_timer({})) == {}
    assert autotune.lookup(CPU, autotune.plan_key(100, 100, True, BF16, 2, False)) is None


# ---------------------------------------------------------------------------------------------
# opt-in runtime tuning
# ---------------------------------------------------------------------------------------------


def test_maybe_tune_is_opt_in_and_runs_once_per_key(monkeypatch) -> None:
    u, k, _ = inputs(2, 2, 100)
    calls = []

    def tune(u, k, **kw):
        calls.append(kw)
        if len(calls) == 2:
            raise RuntimeError("boom")
        key = autotune.plan_key_for(kw["plan"], u.dtype, u.shape[0], False)
        autotune.store(CPU, key, {"num_warps": 8})

    monkeypatch.setattr(autotune, "tune", tune)
    autotune.maybe_tune(u, k, True)  # CPU and no DNASTREAM_AUTOTUNE: nothing
    monkeypatch.setenv("DNASTREAM_AUTOTUNE", "1")
    autotune.maybe_tune(u, k, True)  # still CPU: nothing
    assert calls == []
    monkeypatch.setattr(autotune, "_autotune_enabled", lambda u: True)  # pretend CUDA
    autotune.maybe_tune(u, k, True)
    autotune.maybe_tune(u, k, True)  # same key: once per process
    assert len(calls) == 1
    plan = autotune.tuned_plan(100, 100, True, BF16, batch=2, gated=False, device="cpu")
    assert plan.num_warps == 8
    u2, k2, g2 = inputs(2, 2, 300, gated=True)
    with pytest.warns(UserWarning, match="failed"):  # a failing tune only warns
        autotune.maybe_tune(u2, k2, True, g2, g2)
    autotune.clear_memory()  # new process, entry on disk: no tuning
    autotune.maybe_tune(u, k, True)
    autotune.maybe_tune(*inputs(2, 2, 300)[:2], False)  # no circular plan for L=300
    assert len(calls) == 2


def test_tuned_plan_works_with_a_precomputed_spectrum() -> None:
    """A tuned plan keeps the default's structure, so the filter spectrum is the same."""
    u, k, _ = inputs(3, 2, 600)
    default = plan_for(600, 600, True, BF16, batch=3)
    autotune.store(CPU, autotune.plan_key_for(default, BF16, 3, False), {"chunk": 16})
    plan = autotune.tuned_plan(600, 600, True, BF16, batch=3, gated=False, device="cpu")
    assert plan.chunk == 16 != default.chunk
    spec = filter_spectrum(k, default)
    assert torch.equal(spec, filter_spectrum(k, plan))
    y = fftconv_triton(u, k, causal=True, plan=plan, k_spectrum=spec)
    assert rel_err(y, ref64(u, k)) <= BARS[BF16]


def test_the_fftconv_op_launches_with_the_stored_settings(monkeypatch) -> None:
    """dnastream::fftconv picks up a stored entry (forward and backward settings)."""
    from dnastream.kernels import fftconv_op

    monkeypatch.setattr(fftconv_op, "INTERPRET_ON_CPU", True)
    u, k, _ = inputs(2, 2, 100)
    key = autotune.plan_key(100, 100, True, BF16, 2, False)
    autotune.store(CPU, key, {"ctas_per_sm": 3, "bwd_chunk": 16, "bwd_warps": 8, "bwd_ms": 1.0})
    plan = fftconv_op.triton_plan(u, k, True, tuned=True)
    assert (plan.ctas_per_sm, plan.bwd_chunk, plan.bwd_warps) == (3, 16, 8)
    assert fftconv_op.triton_plan(u, k, True) == plan_for(100, 100, True, BF16, batch=2)
    seen = []
    real = fftconv_op.triton_plan

    def spy(*a, **kw):
        p = real(*a, **kw)
        seen.append(p)
        return p

    monkeypatch.setattr(fftconv_op, "triton_plan", spy)
    u.requires_grad_(True)
    y = torch.ops.dnastream.fftconv(u, k, None, None, None, None, True)
    y.backward(torch.ones_like(y))
    assert len(seen) == 2 and all(p.ctas_per_sm == 3 and p.bwd_warps == 8 for p in seen)
    assert rel_err(y, ref64(u.detach(), k)) <= BARS[BF16]


def test_packaged_settings_are_the_fallback(monkeypatch) -> None:
    """Settings shipped in kernels/tuned_plans.json apply when the user's cache has none
    (matched on the card even under another Triton version); the user's cache wins."""
    key = autotune.plan_key(100, 100, True, BF16, 2, False)
    card = CPU.split("|triton-")[0]
    monkeypatch.setattr(autotune, "_PACKAGED", {f"{card}|triton-0.0": {key: {"ctas_per_sm": 5}}})
    autotune.clear_memory()
    got = autotune.tuned_plan(100, 100, True, BF16, batch=2, gated=False, device="cpu")
    assert got.ctas_per_sm == 5
    autotune.store(CPU, key, {"ctas_per_sm": 3})
    got = autotune.tuned_plan(100, 100, True, BF16, batch=2, gated=False, device="cpu")
    assert got.ctas_per_sm == 3


def test_packaged_settings_of_the_same_compute_capability(monkeypatch) -> None:
    """An H200 (the H100's chip) takes the H100's shipped entries when none of its own exist;
    its own win, another capability's never apply, and the counts say so."""
    h100, h200 = "NVIDIA H100 80GB HBM3|sm90|triton-3.6.0", "NVIDIA H200|sm90|triton-3.6.0"
    a100 = "NVIDIA A100-SXM4-80GB|sm80|triton-3.6.0"
    table = {h100: {"k": {"ctas_per_sm": 3}, "j": {"ctas_per_sm": 2}}, a100: {"a": {"rows": 2}}}
    monkeypatch.setattr(autotune, "_PACKAGED", table)
    assert autotune.packaged_entry(h200, "k") == {"ctas_per_sm": 3}
    assert autotune.packaged_entry(h200, "a") is None
    assert autotune.packaged_entry(CPU, "k") is None
    assert autotune.stored_counts(h200)[1] == 2
    assert autotune.stored_counts(CPU)[1] == 0
    table[h200] = {"k": {"ctas_per_sm": 4}}
    assert autotune.packaged_entry(h200, "k") == {"ctas_per_sm": 4}
    assert autotune.packaged_entry(h200, "j") == {"ctas_per_sm": 2}  # not in its own: the chip's
    assert autotune.stored_counts(h200)[1] == 2


def test_the_shipped_table_is_valid() -> None:
    import importlib.resources

    text = importlib.resources.files("dnastream.kernels").joinpath("tuned_plans.json").read_text()
    data = json.loads(text)
    assert data["_version"] == autotune.CACHE_VERSION
    for gpu, entries in data.items():
        if gpu == "_version":
            continue
        for key, entry in entries.items():
            assert key.startswith("N"), key
            plan_fields = {f.name for f in dataclasses.fields(FFTPlan)}
            # only launch settings (plus timings and notes) may be stored
            assert not (set(entry) & plan_fields) - set(autotune.LAUNCH_FIELDS), entry
