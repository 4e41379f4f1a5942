"""The five Eagle fusion strategies and SVA: shapes, gradients, exactness and behaviour, errors, cost."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from experts.fusion import FUSIONS, Fusion, FusionError, fusion_cost, ms_deform_sample

GRID = 4
T = GRID * GRID
DIM_SETS = [[24], [24, 40], [24, 40, 16, 32]]  # 1, 2 and 4 experts of different widths
VARIANTS = [
    ("sequence_append", {}),
    ("sequence_append", {"dim": 20}),
    ("channel_concat", {}),
    ("llava_hr", {}),
    ("llava_hr", {"gate": "sigmoid", "kernel_size": 1}),
    ("mini_gemini", {}),
    ("mini_gemini", {"local": True, "window": 3, "heads": 2}),
    ("deformable", {}),
    ("deformable", {"dim": 16, "heads": 2, "points": 2}),
    ("sva", {}),
    ("sva", {"query_grid": 2, "dim": 16, "heads": 2, "layers": 2}),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny ops: extra threads only add contention on the shared 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _feats(dims, batch=2, seed=0, grad=False):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, T, d, generator=gen).requires_grad_(grad) for d in dims]


def _expected_shape(name, dims, options):
    n = len(dims)
    return {
        "sequence_append": (n * T, options.get("dim", max(dims))),
        "channel_concat": (T, sum(dims)),
        "llava_hr": (T, dims[0]),
        "mini_gemini": (T, dims[0]),
        "deformable": (T, options.get("dim", dims[0])),
        "sva": (options.get("query_grid", GRID) ** 2, options.get("dim", max(dims))),
    }[name]


def test_registry_has_the_six_strategies():
    assert set(FUSIONS) == {"sequence_append", "channel_concat", "llava_hr", "mini_gemini", "deformable", "sva"}
    for name, cls in FUSIONS.items():
        assert issubclass(cls, Fusion) and cls.name == name


@pytest.mark.parametrize("dims", DIM_SETS, ids=lambda d: f"{len(d)}experts")
@pytest.mark.parametrize("name,options", VARIANTS)
def test_shapes_and_gradients_reach_every_input_and_parameter(name, options, dims):
    torch.manual_seed(0)
    fusion = FUSIONS[name](dims, T, **options)
    feats = _feats(dims, grad=True)
    out = fusion(feats)
    tokens, width = _expected_shape(name, dims, options)
    assert out.shape == (2, tokens, width)
    assert (fusion.out_tokens, fusion.out_dim) == (tokens, width)
    assert torch.isfinite(out).all()
    # a random read-out so no gradient cancels by symmetry (e.g. through LayerNorm)
    (out * torch.randn_like(out)).sum().backward()
    for i, x in enumerate(feats):
        assert x.grad is not None and x.grad.abs().sum() > 0, f"no gradient reaches expert {i}"
    for pname, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches parameter {pname}"


@pytest.mark.parametrize("name", ["sequence_append", "llava_hr", "mini_gemini", "deformable", "sva"])
def test_learnable_fusions_fit_a_target(name):
    torch.manual_seed(0)
    dims = [24, 40]
    fusion = FUSIONS[name](dims, T)
    feats = _feats(dims, batch=4)
    target = torch.randn(4, fusion.out_tokens, fusion.out_dim)
    opt = torch.optim.Adam(fusion.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(fusion(feats), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_channel_concat_is_exactly_torch_cat_and_parameter_free():
    dims = [24, 40, 16, 32]
    feats = _feats(dims)
    fusion = FUSIONS["channel_concat"](dims, T)
    assert torch.equal(fusion(feats), torch.cat(feats, dim=-1))
    assert sum(p.numel() for p in fusion.parameters()) == 0


def test_sequence_append_puts_each_projected_expert_in_its_own_block():
    dims = [24, 40, 16]
    fusion = FUSIONS["sequence_append"](dims, T)
    feats = _feats(dims)
    out = fusion(feats)
    for i, x in enumerate(feats):
        assert torch.allclose(out[:, i * T:(i + 1) * T], fusion.proj[i](x))


def test_llava_hr_single_expert_is_the_main_branch_and_adapter_is_a_local_conv():
    main_only = FUSIONS["llava_hr"]([24], T)
    (x,) = _feats([24])
    assert torch.equal(main_only([x]), x)

    torch.manual_seed(0)
    fusion = FUSIONS["llava_hr"]([24, 40], T, kernel_size=3)
    with torch.no_grad():  # constant gate (bias only) so only the conv adapter spreads information
        fusion.adapters[0].gate[-1].weight.zero_()
        fusion.adapters[0].gate[-1].bias.fill_(0.5)
    main, side = _feats([24, 40])
    base = fusion([main, side])
    side2 = side.clone()
    side2[:, 1 * GRID + 1] += 5.0  # token at (row 1, col 1)
    changed = (fusion([main, side2]) - base).abs().amax(dim=(0, 2)) > 1e-6
    rows, cols = torch.arange(T) // GRID, torch.arange(T) % GRID
    inside = ((rows - 1).abs() <= 1) & ((cols - 1).abs() <= 1)
    assert torch.equal(changed, inside)
    # the gate scales the adapter branch: gate 0 (tanh(0)) leaves the main branch untouched
    with torch.no_grad():
        fusion.adapters[0].gate[-1].bias.zero_()
    assert torch.allclose(fusion([main, side]), main)


def test_mini_gemini_local_window_restricts_attention_and_full_window_equals_global():
    torch.manual_seed(0)
    local = FUSIONS["mini_gemini"]([24, 40, 16], T, local=True, window=3, heads=2)
    feats = _feats([24, 40, 16])
    base = local(feats)
    perturbed = [f.clone() for f in feats]
    perturbed[1][:, 2 * GRID + 2] += 5.0 * torch.randn(40)  # token (row 2, col 2) of expert 1; not a
    # constant shift, which LayerNorm would remove
    changed = (local(perturbed) - base).abs().amax(dim=(0, 2)) > 1e-6
    rows, cols = torch.arange(T) // GRID, torch.arange(T) % GRID
    assert torch.equal(changed, ((rows - 2).abs() <= 1) & ((cols - 2).abs() <= 1))

    whole = FUSIONS["mini_gemini"]([24, 40, 16], T, local=True, window=2 * GRID - 1, heads=2)
    glob = FUSIONS["mini_gemini"]([24, 40, 16], T, local=False, heads=2)
    glob.load_state_dict(local.state_dict())
    whole.load_state_dict(local.state_dict())
    assert torch.allclose(whole(feats), glob(feats), atol=1e-5)
    assert (glob(perturbed) - glob(feats)).abs().amax(dim=(0, 2)).gt(1e-6).all()


def test_ms_deform_sample_is_bilinear_sampling():
    torch.manual_seed(0)
    h, dh, g = 2, 3, GRID
    value = torch.randn(1, h, dh, g, g)
    centres = (torch.arange(g) + 0.5) / g
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    ref = torch.stack([xs, ys], -1).reshape(1, T, 1, 1, 1, 2).expand(1, T, h, 1, 1, 2)
    weights = torch.ones(1, T, h, 1, 1)
    at_centres = ms_deform_sample([value], ref, weights)  # [1, T, h*dh]
    expected = value.flatten(3).permute(0, 3, 1, 2).flatten(2)
    assert torch.allclose(at_centres, expected, atol=1e-6)
    # half a pixel to the right: the mean of the two horizontal neighbours (zero beyond the edge)
    shifted = ms_deform_sample([value], ref + torch.tensor([0.5 / g, 0.0]), weights)
    right = F.pad(value[..., 1:], (0, 1))
    expected = ((value + right) / 2).flatten(3).permute(0, 3, 1, 2).flatten(2)
    assert torch.allclose(shifted, expected, atol=1e-6)


def _zero_offset_deformable(dim_in=24, dim=16):
    fusion = FUSIONS["deformable"]([dim_in], T, dim=dim, heads=2, points=1)
    with torch.no_grad():
        fusion.sampling_offsets.weight.zero_()
        fusion.sampling_offsets.bias.zero_()
    return fusion


def test_deformable_zero_offsets_sample_the_reference_points():
    torch.manual_seed(0)
    fusion = _zero_offset_deformable()
    (x,) = _feats([24])
    expected = fusion.query_proj(x) + fusion.output_proj(fusion.value_proj[0](x))
    assert torch.allclose(fusion([x]), expected, atol=1e-5)


def test_deformable_sampling_moves_with_the_offsets():
    torch.manual_seed(0)
    fusion = _zero_offset_deformable()
    (x,) = _feats([24])
    with torch.no_grad():
        fusion.sampling_offsets.bias.view(2, 1, 1, 2)[..., 0] = 1.0  # one pixel to the right
    value = fusion.value_proj[0](x).unflatten(1, (GRID, GRID))
    moved = F.pad(value[:, :, 1:], (0, 0, 0, 1)).flatten(1, 2)  # column c+1, zeros past the edge
    expected = fusion.query_proj(x) + fusion.output_proj(moved)
    assert torch.allclose(fusion([x]), expected, atol=1e-5)


def test_deformable_offsets_start_as_a_regular_pattern():
    fusion = FUSIONS["deformable"]([24, 40], T, heads=4, points=3)
    bias = fusion.sampling_offsets.bias.view(4, 2, 3, 2)  # heads, levels, points, xy
    assert torch.count_nonzero(fusion.sampling_offsets.weight) == 0
    assert torch.allclose(bias[:, 0], bias[:, 1])  # same star on every level
    norms = bias[:, 0].abs().amax(-1)  # point k sits k+1 pixels out (max-norm)
    assert torch.allclose(norms, torch.tensor([1.0, 2.0, 3.0]).expand(4, 3))
    assert len({tuple(d.tolist()) for d in bias[:, 0, 0]}) == 4  # one direction per head
    before = fusion(_feats([24, 40]))
    with torch.no_grad():
        fusion.sampling_offsets.bias.add_(0.7)
    assert not torch.allclose(fusion(_feats([24, 40])), before, atol=1e-4)


@pytest.mark.parametrize(
    "name,options,match",
    [
        ("channel_concat", {"dim": 8}, r"fusion 'channel_concat': unknown option 'dim' \(known options: none\)"),
        ("deformable", {"point": 2}, r"fusion 'deformable': unknown option 'point' \(known options: dim, heads, points\)"),
        ("deformable", {"heads": 0}, r"fusion 'deformable': option 'heads'=0"),
        ("deformable", {"heads": 5}, r"'heads'=5 does not divide dim=24"),
        ("mini_gemini", {"heads": 7}, r"'heads'=7 does not divide the query width 24"),
        ("mini_gemini", {"window": 4}, r"option 'window'=4: .*odd"),
        ("llava_hr", {"kernel_size": 2}, r"option 'kernel_size'=2: .*odd"),
        ("llava_hr", {"gate": "relu"}, r"fusion 'llava_hr': option 'gate'='relu'"),
        ("sequence_append", {"dim": -3}, r"option 'dim'=-3"),
        ("sva", {"query_grid": 3}, r"option 'query_grid'=3 must divide the token grid 4"),
        ("sva", {"heads": 7}, r"'heads'=7 does not divide the width 40"),
    ],
)
def test_bad_options_are_one_line_errors(name, options, match):
    with pytest.raises(FusionError, match=match) as info:
        FUSIONS[name]([24, 40], T, **options)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_bad_construction_and_inputs_are_clear_errors(name):
    cls = FUSIONS[name]
    with pytest.raises(FusionError, match="not a square"):
        cls([24], 15)
    with pytest.raises(FusionError, match="non-empty list"):
        cls([], T)
    with pytest.raises(FusionError, match="positive ints"):
        cls([24, 0], T)
    fusion = cls([24, 40], T)
    with pytest.raises(FusionError, match=f"fusion '{name}': expected 2 expert features, got 1"):
        fusion(_feats([24]))
    with pytest.raises(FusionError, match=r"expert 1 features must be \[B, 16, 40\], got \(2, 16, 32\)"):
        fusion(_feats([24, 32]))
    with pytest.raises(FusionError, match=r"expert 0 features must be \[B, 16, 24\], got \(2, 9, 24\)"):
        fusion([torch.randn(2, 9, 24), torch.randn(2, 16, 40)])
    with pytest.raises(FusionError, match="expert 1 has batch 3, expert 0 has 2"):
        fusion([torch.randn(2, T, 24), torch.randn(3, T, 40)])
    with pytest.raises(FusionError, match="expected a list of 2 tensors"):
        fusion(torch.randn(2, T, 24))


def test_cost_counts_params_and_matmul_flops():
    dims = [24, 40, 16]
    cost = fusion_cost(FUSIONS["sequence_append"], dims, T, batch=2, dim=32)
    assert cost["params"] == sum(d * 32 + 32 for d in dims)
    assert cost["flops"] == 2 * 2 * T * sum(d * 32 for d in dims)
    assert (cost["out_tokens"], cost["out_dim"]) == (3 * T, 32)
    concat = fusion_cost(FUSIONS["channel_concat"], dims, T)
    assert (concat["params"], concat["flops"], concat["out_dim"]) == (0, 0, 80)
    for name in ("llava_hr", "mini_gemini", "deformable"):
        real = FUSIONS[name](dims, T)
        assert fusion_cost(FUSIONS[name], dims, T)["params"] == sum(p.numel() for p in real.parameters())
