"""Every figure function writes a non-empty PNG that matplotlib reads back at figsize * dpi pixels."""
import numpy as np
import pytest
from matplotlib import cbook
from matplotlib import image as mimage

from skillneurons_jax.analysis import figures, robustness

FIGSIZE, DPI = (4.0, 3.0), 50


def _check_png(path, figsize=FIGSIZE, dpi=DPI):
    assert path.exists() and path.stat().st_size > 1000
    img = mimage.imread(path)
    assert img.shape[:2] == (round(figsize[1] * dpi), round(figsize[0] * dpi))
    assert img[..., :3].std() > 0.01                     # not a blank canvas
    assert not list(path.parent.glob(".*.tmp"))          # atomic write left no temporary file


def _curve(rng, K=4):
    ks = np.array([0, 1, 5, 15.0])[:K]
    skill = 0.8 - 0.02 * ks[:, None] + rng.normal(0, 0.01, (K, 3))
    random = 0.8 - 0.002 * ks[:, None, None] + rng.normal(0, 0.01, (K, 2, 3))
    return robustness.curve_stats(ks, skill, random)


def test_transfer_heatmaps(tmp_path):
    m = np.array([[0.9, 0.6, np.nan], [0.5, 0.8, 0.55]])
    for relative in (False, True):
        out = figures.transfer_heatmap(m, ["sst2", "imdb"], ["sst2", "imdb", "advsst2"],
                                       tmp_path / f"t{relative}.png", title="transfer", relative=relative,
                                       figsize=FIGSIZE, dpi=DPI)
        _check_png(out)
    with pytest.raises(ValueError, match="does not match"):
        figures.transfer_heatmap(m, ["sst2"], ["a", "b", "c"], tmp_path / "x.png", title="t")


def test_spearman_heatmaps(tmp_path):
    m = np.array([[1.0, 0.4, 0.1], [0.4, 1.0, 0.2], [0.1, 0.2, 1.0]])
    p = np.array([[np.nan, 0.001, 0.3], [0.001, np.nan, 0.2], [0.3, 0.2, np.nan]])
    _check_png(figures.spearman_heatmap(m, ["a", "b", "c"], tmp_path / "s.png", title="rho", pvalues=p,
                                        figsize=FIGSIZE, dpi=DPI))
    _check_png(figures.spearman_heatmap(m, ["a", "b", "c"], tmp_path / "z.png", title="z", zscored=True,
                                        figsize=FIGSIZE, dpi=DPI))


def test_layer_boxplot_and_default_size(tmp_path):
    rng = np.random.default_rng(0)
    vals = rng.uniform(0.5, 1, (6, 200))
    _check_png(figures.layer_boxplot(vals, tmp_path / "b.png", title="pred per layer", figsize=FIGSIZE, dpi=DPI))
    out = figures.layer_boxplot(vals, tmp_path / "auto.png", title="auto size", dpi=DPI)
    _check_png(out, figsize=(max(5.0, 0.45 * 6 + 2.5), 4.0))


def test_neuron_boxes_with_model_accuracy_arrays_and_stats(tmp_path):
    rng = np.random.default_rng(1)
    values = {"imdb": rng.uniform(0.5, 1, 500), "sst2": figures.box_stats(rng.uniform(0.5, 1, 500), "sst2")}
    _check_png(figures.neuron_boxes_with_model_accuracy(values, {"sst2": 0.9, "imdb": None}, tmp_path / "f2.png",
                                                        title="Figure 2", figsize=FIGSIZE, dpi=DPI))


def test_suppression_curves_single_and_grid(tmp_path):
    rng = np.random.default_rng(2)
    one = [figures.SuppressionPanel("sst2 → sst2", _curve(rng))]
    _check_png(figures.suppression_curves(one, tmp_path / "one.png", title="same task", figsize=FIGSIZE, dpi=DPI))
    four = [figures.SuppressionPanel(f"t{i}", _curve(rng)) for i in range(4)]
    _check_png(figures.suppression_curves(four, tmp_path / "four.png", title="grid", figsize=(8, 5), dpi=DPI),
               figsize=(8, 5))
    with pytest.raises(ValueError, match="no suppression"):
        figures.suppression_curves([], tmp_path / "none.png", title="x")


def test_predictivity_per_layer(tmp_path):
    rng = np.random.default_rng(3)
    preds = {"qqp": rng.uniform(0.5, 1, (4, 300)), "sst2": rng.uniform(0.5, 0.9, (4, 300))}
    _check_png(figures.predictivity_per_layer(preds, tmp_path / "l.png", title="per layer", figsize=(8, 3),
                                              dpi=DPI), figsize=(8, 3))
    np.testing.assert_allclose(figures._top_mean(np.array([[1.0, 2, 3, 4]]), 0.5), [3.5])


def test_box_stats_match_matplotlib():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=1000), [8.0, -9.0, 10.0]])
    mine = figures.box_stats(x, "x")
    ref = cbook.boxplot_stats(x)[0]
    for key in ("med", "q1", "q3", "whislo", "whishi"):
        assert mine[key] == pytest.approx(ref[key])
    np.testing.assert_allclose(np.sort(mine["fliers"]), np.sort(ref["fliers"]))
    many = figures.box_stats(np.concatenate([rng.normal(size=2000), np.linspace(50, 60, 100)]), "y")
    assert len(many["fliers"]) == figures._MAX_FLIERS and many["fliers"].max() == 60


def test_majority_rate_is_drawn_in_accuracy_and_suppression_figures(tmp_path):
    """Issue 14 item 6c: the majority-class rate, not only 0.5, appears in the figures (the image changes where the
    line is drawn, and nowhere else than near its height)."""
    rng = np.random.default_rng(4)
    values = {"tweets": rng.uniform(0.5, 0.9, (3, 40))}
    plain = figures.neuron_boxes_with_model_accuracy(values, {"tweets": 0.8}, tmp_path / "a.png", title="t",
                                                     figsize=FIGSIZE, dpi=DPI)
    with_rate = figures.neuron_boxes_with_model_accuracy(values, {"tweets": 0.8}, tmp_path / "b.png", title="t",
                                                         figsize=FIGSIZE, dpi=DPI, majority={"tweets": 0.72})
    _check_png(with_rate)
    assert not np.array_equal(mimage.imread(plain), mimage.imread(with_rate))
    curve = _curve(rng)
    panel = figures.suppression_curves([figures.SuppressionPanel("a → a", curve)], tmp_path / "c.png", title="t",
                                       figsize=FIGSIZE, dpi=DPI)
    marked = figures.suppression_curves([figures.SuppressionPanel("a → a", curve, majority_rate=0.7)],
                                        tmp_path / "d.png", title="t", figsize=FIGSIZE, dpi=DPI)
    _check_png(marked)
    assert not np.array_equal(mimage.imread(panel), mimage.imread(marked))


def test_predictivity_figures_draw_the_permutation_floor(tmp_path):
    """The floor drawn is the label-permutation null's at the dataset's n, never 0.5 when a null is recorded."""
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.55, 0.9, (3, 40))
    floor, top = np.full(3, 0.61), np.full(3, 0.7)
    path = figures.layer_boxplot(pred, tmp_path / "box.png", title="t", floor=floor, null_max=top, dpi=30)
    per_layer = figures.predictivity_per_layer({"sst2": pred}, tmp_path / "layers.png", title="t", dpi=30,
                                               floors={"sst2": {"mean": floor, "max": top}})
    boxes = figures.neuron_boxes_with_model_accuracy({"sst2": pred}, {"sst2": 0.8}, tmp_path / "b.png", title="t",
                                                     floors={"sst2": 0.61}, dpi=30)
    assert all(p.exists() and p.stat().st_size > 0 for p in (path, per_layer, boxes))
