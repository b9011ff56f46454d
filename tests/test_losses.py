"""AVEL, MEM and CCC against hand computations and their defining properties."""

import math

import torch
import torch.nn.functional as F

from training import losses


def test_avel_matches_hand_computation():
    # Three samples in 2-D, labels (0, 0, 1), CLIP temperature with scale = ln(2) -> x2.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    v = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6]])
    labels = torch.tensor([0, 0, 1])
    loss, s_av = losses.avel_loss(a, v, labels, torch.tensor(math.log(2.0)))
    sim = [[0.0, 1.0, 0.8], [1.0, 0.0, 0.6], [0.8, 0.6, 0.96]]  # a_i . v_j
    pos = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]

    def direction(s):
        total = 0.0
        for i in range(3):
            z = [2 * s[i][j] for j in range(3)]
            lse = math.log(sum(math.exp(x) for x in z))
            total += -sum(pos[i][j] * (z[j] - lse) for j in range(3))
        return total / 3

    transposed = [[sim[j][i] for j in range(3)] for i in range(3)]
    expected = 0.5 * (direction(sim) + direction(transposed))
    assert abs(float(loss) - expected) < 1e-5
    torch.testing.assert_close(s_av, 2 * torch.tensor(sim))


def test_avel_reference_temperature_divides():
    a = F.normalize(torch.randn(4, 8), dim=1)
    v = F.normalize(torch.randn(4, 8), dim=1)
    scale = torch.tensor(math.log(1 / 0.07))
    _, s = losses.avel_loss(a, v, torch.arange(4), scale, temperature="reference")
    torch.testing.assert_close(s, a @ v.t() / scale)


def test_avel_lower_for_aligned_than_shuffled():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3] * 4)
    centres = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    a = F.normalize(centres[labels] + 0.1 * torch.randn(16, 16, generator=g), dim=1)
    v = F.normalize(centres[labels] + 0.1 * torch.randn(16, 16, generator=g), dim=1)
    scale = torch.tensor(math.log(10.0))
    aligned, _ = losses.avel_loss(a, v, labels, scale)
    shuffled, _ = losses.avel_loss(a, v[torch.roll(torch.arange(16), 1)], labels, scale)
    assert aligned < shuffled


def test_mem_negatives_never_share_the_label():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        labels = torch.randint(0, 4, (12,), generator=g)
        sim = torch.randn(12, 12, generator=g) * 5
        rows, cols = losses.sample_negatives(sim, labels, g)
        assert torch.all(labels[rows] != labels[cols])
        has_other = (labels[:, None] != labels[None, :]).any(1)
        assert set(rows.tolist()) == set(has_other.nonzero().flatten().tolist())


def test_mem_prefers_hard_negatives():
    labels = torch.tensor([0, 1, 2, 3])
    sim = torch.zeros(4, 4)
    sim[0, 2] = 10.0  # anchor 0 is most similar to sample 2
    g = torch.Generator().manual_seed(0)
    picks = [int(losses.sample_negatives(sim, labels, g)[1][0]) for _ in range(200)]
    assert picks.count(2) > 180


def test_mem_single_label_batch_skips(tiny_model):
    a, v = torch.randn(3, 10, 64), torch.randn(3, 4, 48)
    am, vm = torch.ones(3, 10), torch.ones(3, 4)
    same = torch.zeros(3, dtype=torch.long)
    out = losses.mem_loss(tiny_model.fusion, a, am, v, vm, same, torch.randn(3, 3),
                          tiny_model.mem_audio, tiny_model.mem_video)
    assert out is None
    mixed = torch.tensor([0, 0, 1])
    out = losses.mem_loss(tiny_model.fusion, a, am, v, vm, mixed, torch.randn(3, 3),
                          tiny_model.mem_audio, tiny_model.mem_video)
    assert torch.isfinite(out)


def test_training_step_on_single_label_batch(tiny_model):
    from tests.conftest import make_batch

    out = tiny_model.training_step(make_batch(tiny_model, batch=3, seconds=0.5, frames=2, labels=[2, 2, 2]))
    assert "mem" not in out and torch.isfinite(out["loss"])


def test_ccc_identical_and_independent():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, generator=g)
    assert abs(float(losses.ccc(x, x)) - 1.0) < 1e-6
    assert abs(float(losses.ccc(x, torch.randn(5000, generator=g)))) < 0.05
    assert float(losses.ccc(x, x + 1.0)) < 0.9  # a shift is penalised, unlike Pearson's r


def test_weighted_ccc_loss():
    g = torch.Generator().manual_seed(0)
    gold = torch.randn(100, 3, generator=g)
    assert abs(float(losses.ccc_loss(gold, gold, (0.2, 0.7, 1.0)))) < 1e-5
    pred = gold.clone()
    pred[:, 2] = torch.randn(100, generator=g)
    expected = 1.0 * (1 - float(losses.ccc(pred[:, 2], gold[:, 2])))
    assert abs(float(losses.ccc_loss(pred, gold, (0.2, 0.7, 1.0))) - expected) < 1e-5


def _fit(head, x, y):
    opt = torch.optim.LBFGS(head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return F.cross_entropy(head(x), y).item()


def test_mem_same_emotion_is_linearly_separable_after_the_layernorm():
    """"Same emotion?" from a pooled vector that holds an audio part and a video part is an
    XOR of the two: a linear head cannot fit it on their SUM. But each cross-attention layer
    ends in LayerNorm(out + residual), and the LayerNorm of (shared constant + audio part +
    video part) is not additive: its mean and scale depend on whether the parts agree, and
    then a linear head fits the XOR exactly. So the paper's linear MEM head is not ruled out
    by its form; whether MEM learns is a measured question (docs/training-departures.md)."""
    from training.model import matching_head

    torch.manual_seed(0)
    a_val, v_val = torch.randint(0, 2, (2, 512))  # the valence each modality shows
    parts = torch.zeros(512, 16)
    parts[:, 0] = a_val * 2.0 - 1  # audio's part of the pooled vector
    parts[:, 1] = v_val * 2.0 - 1  # video's part
    shared = torch.zeros(16)
    shared[2] = 1.0  # what every clip has in common (biases, the residual's mean)
    same = (a_val == v_val).long()
    noise = 0.02 * torch.randn(512, 16)
    summed = shared + parts + noise
    normed = F.layer_norm(shared + parts, (16,)) + noise
    linear_sum = _fit(matching_head(16, "linear"), summed, same)
    linear_norm = _fit(matching_head(16, "linear"), normed, same)
    mlp_sum = _fit(matching_head(16, "mlp"), summed, same)
    assert linear_sum > 0.66, linear_sum  # ln 2 = 0.693: chance
    assert linear_norm < 0.1, linear_norm
    assert mlp_sum < 0.1, mlp_sum


def test_mem_head_kind_is_kept_in_the_checkpoint(tmp_path):
    from training.model import FoalNet

    model = FoalNet.from_preset("tiny", mem_head="mlp")
    model.save(tmp_path)
    loaded = FoalNet.load(tmp_path)
    assert loaded.config.mem_head == "mlp" and isinstance(loaded.mem_audio, torch.nn.Sequential)
