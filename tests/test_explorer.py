"""The neuron explorer page (analysis.explorer): its data against the files they came from, and the page itself in
headless Chromium (selenium): select a task, click a neuron on the map, read the details panel."""
import base64
import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from skillneurons_jax import io, layout
from skillneurons_jax.analysis import explorer
from skillneurons_jax.neurons import suppression as suppression_masks
from skillneurons_jax.stages import explorer as explorer_stage

import analysis_synthetic as synth  # noqa: E402  (tests/ is on sys.path under pytest)

MODEL, L, N, SEEDS = "tiny", 3, 40, 2
TASKS = ("sst2", "advsst2", "mrpc")
KS = (0, 5, 10, 20)


def _write_record(workdir, preds, rng):
    """An explorer record of sst2 and advsst2 in the stage's format, from synthetic activations."""
    neurons = np.concatenate([explorer_stage.top_neurons(preds[t], 3) for t in ("sst2", "advsst2")])
    _, first = np.unique(neurons[:, 0] * 1000 + neurons[:, 1], return_index=True)
    neurons = neurons[np.sort(first)]
    arrays = {"neurons": neurons, "token": rng.integers(0, 4, len(neurons)).astype(np.int32)}
    for task, n_dev in (("sst2", 30), ("advsst2", 12)):
        act = rng.normal(size=(n_dev, len(neurons))).astype(np.float32)
        labels = rng.integers(0, 2, n_dev).astype(np.int32)
        threshold = rng.normal(0, 0.3, len(neurons)).astype(np.float32)
        top, bottom = explorer_stage.extremes(act, 2)
        rows = np.unique(np.concatenate([top.ravel(), bottom.ravel()])).astype(np.int32)
        arrays.update({f"act__{task}": act, f"labels__{task}": labels, f"threshold__{task}": threshold,
                       f"acc__{task}": explorer_stage.recomputed_accuracy(act, labels, threshold).astype(np.float32),
                       f"top__{task}": top, f"bottom__{task}": bottom, f"rows__{task}": rows,
                       f"texts__{task}": np.asarray([f"{task} text <b>{r}</b> & more" for r in rows])})
    path = layout.explorer_path(workdir, MODEL, "sst2")
    io.atomic_save_npz(path, **arrays)
    io.write_sidecar(path, stage="explorer", model=MODEL, task="sst2", tasks=["sst2", "advsst2"], seed=0,
                     prompt_task="sst2", acc_check={"sst2": 0.0, "advsst2": 0.0})
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer") / "work"
    rng = np.random.default_rng(3)
    preds = {}
    for task in TASKS:
        preds[task] = rng.uniform(0.5, 0.9, size=(L, N)).astype(np.float32)
        preds[task][1, 7] = 0.97 if task != "mrpc" else 0.55       # a shared skill neuron of sst2 / advsst2
        synth.write_predictivity(root, MODEL, task, preds[task], seeds=SEEDS, rng=rng)
    skill, random = synth.suppression_arrays(KS, SEEDS, 2, rng)
    for target in ("sst2", "advsst2"):
        path = synth.write_suppression(root, MODEL, "sst2", target, KS, skill, random)
        obj = json.loads(path.read_text())
        io.atomic_write_json(path, {**obj, "scope": "layer"})
    _write_record(root, preds, rng)
    # a pruning result of sst2 in the prune stage's format: layers 1-2 pruned, the top 4 of 40 kept in each
    io.atomic_write_json(layout.prune_path(root, MODEL, "sst2"), {
        "model": MODEL, "task": "sst2", "seeds": [0, 1], "keep_percent": 10.0, "layers": [1, 2],
        "intermediate_sizes": [N, 4, 4], "unpruned": {"accuracy": [0.8, 0.9]}, "pruned": {"accuracy": [0.7, 0.8]},
        "random": [{"accuracy": [0.5, 0.6]}]})
    return root


def test_data_match_the_files(workdir):
    data, problems = explorer.explorer_data(workdir)
    assert problems == []
    m = data["models"][MODEL]
    assert (m["layers"], m["neurons"]) == (L, N) and sorted(t["name"] for t in m["tasks"]) == sorted(TASKS)
    for t in m["tasks"]:
        pred = np.frombuffer(base64.b64decode(t["pred"]), "<f4").reshape(L, N)
        np.testing.assert_array_equal(pred, np.load(workdir / t["file"])["pred"])
    assert {t["name"]: t["clean"] for t in m["tasks"]}["advsst2"] == "sst2"
    z = np.load(layout.predictivity_path(workdir, MODEL, "sst2"))
    for row in m["suppression"]:      # the page selects rank < count: the same neurons as the suppress stage
        masks = suppression_masks.skill_masks(z["pred"], row["ks"], "layer")
        assert row["counts"] == [int(c) for c in masks.sum(axis=-1)[:, 0]]
    (record,) = m["records"]
    rec = np.load(layout.explorer_path(workdir, MODEL, "sst2"))
    for name, labels_n in (("sst2", 30), ("advsst2", 12)):
        s = record["sets"][name]
        assert s["n_dev"] == labels_n
        for k, nd in enumerate(s["neurons"]):
            counts = np.asarray(nd["hist"]["counts"])
            assert counts.sum(axis=1).tolist() == s["label_counts"]
            assert nd["threshold"] == float(rec[f"threshold__{name}"][k])
            assert nd["top"][0]["act"] == float(rec[f"act__{name}"][:, k].max())
    # an unreadable record is listed, never raised
    bad = layout.explorer_path(workdir, MODEL, "mrpc")
    synth.write_text(bad, "not an npz")
    synth.write_text(io.sidecar_path(bad), "{}")
    try:
        page = explorer.build_explorer(workdir, workdir / "page.html")
        assert any(str(bad) in p for p in page.problems) and page.path.exists()
    finally:
        bad.unlink()
        io.sidecar_path(bad).unlink()


def test_no_text_can_close_the_data_element():
    html = explorer.page_html({"models": {}, "problems": ["</script><script>alert(1)</script>"]})
    assert html.count("</script>") == 2       # the data element's and the code's own


def _browser():
    """A headless Chromium driven by selenium, or the reason there is none."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("no Chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1300", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_page_in_a_browser(workdir, tmp_path):
    page = explorer.build_explorer(workdir)
    assert page.path == workdir / "report" / "explorer.html" and page.problems == []
    driver = _browser()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    try:
        driver.get(page.path.resolve().as_uri())
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert driver.get_log("browser") == [] if hasattr(driver, "get_log") else True
        Select(driver.find_element(By.ID, "task")).select_by_value("advsst2")
        z = {t: np.load(layout.predictivity_path(workdir, MODEL, t)) for t in TASKS}
        rec = np.load(layout.explorer_path(workdir, MODEL, "sst2"))
        layer, neuron = (int(x) for x in rec["neurons"][0])          # sst2's best neuron: recorded
        # click its cell on the map: the offset is from the element's centre
        canvas = driver.find_element(By.ID, "map")
        box = driver.execute_script(
            "const c = document.getElementById('map'), r = c.getBoundingClientRect(), p = cellOf(arguments[0], "
            "arguments[1]); return [p.x + c.clientLeft + 2 - r.width / 2, p.y + c.clientTop + 2 - r.height / 2];",
            layer, neuron)
        ActionChains(driver).move_to_element_with_offset(canvas, int(box[0]), int(box[1])).click().perform()
        details = driver.find_element(By.ID, "details")
        assert (details.get_attribute("data-layer"), details.get_attribute("data-neuron")) == (str(layer), str(neuron))
        assert f"layer {layer}, neuron {neuron}" in driver.find_element(By.ID, "neuron-title").text
        for task in TASKS:
            row = details.find_element(By.CSS_SELECTOR, f"#pred-table tr[data-task='{task}']")
            value = float(row.find_element(By.CSS_SELECTOR, "[data-field='pred']").get_attribute("data-value"))
            pred = z[task]["pred"]
            assert value == float(pred[layer, neuron])
            flat = np.lexsort((np.arange(L * N), -pred.ravel()))
            rank = int(np.nonzero(flat == layer * N + neuron)[0][0]) + 1
            assert int(row.find_element(By.CSS_SELECTOR, "[data-field='rank']").get_attribute("data-value")) == rank
            layer_order = suppression_masks.ranking(pred, "layer")[layer]
            in_layer = int(np.nonzero(layer_order == neuron)[0][0]) + 1
            assert int(row.find_element(By.CSS_SELECTOR, "[data-field='layer-rank']").get_attribute(
                "data-value")) == in_layer
            assert ("current" in row.get_attribute("class")) == (task == "advsst2")
        for name in ("sst2", "advsst2"):
            s = details.find_element(By.CSS_SELECTOR, f".set[data-set='{name}']")
            for field in ("threshold", "acc"):
                shown = float(s.find_element(By.CSS_SELECTOR, f"[data-field='{field}']").get_attribute("data-value"))
                assert shown == float(rec[f"{field}__{name}"][0])
            top_row = s.find_element(By.CSS_SELECTOR, ".examples-highest tr[data-row]")
            assert int(top_row.get_attribute("data-row")) == int(rec[f"top__{name}"][0, 0])
            assert f"{name} text <b>{int(rec[f'top__{name}'][0, 0])}</b> & more" in top_row.text   # as text, not HTML
        # suppression: a row for each (target, k > 0) whose skill mask holds the neuron
        masks = suppression_masks.skill_masks(z["sst2"]["pred"], KS, "layer")[:, layer, neuron]
        want = {(t, float(k)) for t in ("sst2", "advsst2") for k, hit in zip(KS, masks) if hit and k > 0}
        rows = details.find_elements(By.CSS_SELECTOR, "#suppression-table tr[data-target]")
        assert want and {(r.get_attribute("data-target"), float(r.get_attribute("data-k"))) for r in rows} == want
        sup = json.loads(layout.suppression_path(workdir, MODEL, "sst2", "sst2").read_text())
        first = next(r for r in rows if r.get_attribute("data-target") == "sst2")
        k = first.get_attribute("data-k")
        key = next(key for key in sup["skill"] if float(key) == float(k))
        shown = float(first.find_element(By.CSS_SELECTOR, "[data-field='skill']").get_attribute("data-value"))
        assert shown == pytest.approx(float(np.mean(sup["skill"][key])), abs=1e-12)
        # pruning: neuron (1, 7) is sst2's best in layer 1, so the pruned model kept it
        prow = details.find_element(By.CSS_SELECTOR, "#pruning-table tr[data-task='sst2']")
        assert prow.find_element(By.CSS_SELECTOR, "[data-field='status']").text == "kept"
        assert float(prow.find_element(By.CSS_SELECTOR, "[data-field='pruned']").get_attribute("data-value")) == 0.75
        driver.save_screenshot(str(tmp_path / "explorer_recorded.png"))
        # search: a neuron nobody recorded says so
        pred = z["sst2"]["pred"]
        low_l, low_n = (int(x) for x in np.unravel_index(np.argmin(pred), pred.shape))
        for name, value in (("layer-input", low_l), ("neuron-input", low_n)):
            box = driver.find_element(By.ID, name)
            box.clear()
            box.send_keys(str(value))
        driver.find_element(By.ID, "go").click()
        assert driver.find_element(By.ID, "details").get_attribute("data-neuron") == str(low_n)
        assert driver.find_elements(By.ID, "not-recorded")
        status = driver.find_element(By.CSS_SELECTOR, "#pruning-table tr[data-task='sst2'] [data-field='status']").text
        kept = low_l == 0 or int(np.nonzero(suppression_masks.ranking(pred, "layer")[low_l] == low_n)[0][0]) < 4
        assert status == ("kept (layer not pruned)" if low_l == 0 else "kept" if kept else "removed")
        driver.save_screenshot(str(tmp_path / "explorer_search.png"))
        shot = os.environ.get("SKILLNEURONS_EXPLORER_SCREENSHOT")
        if shot:     # where a person wants to look at it (the test's own copy stays under tmp_path)
            shutil.copyfile(tmp_path / "explorer_recorded.png", shot)
    finally:
        driver.quit()
    assert (tmp_path / "explorer_recorded.png").stat().st_size > 10_000


def test_the_report_builds_and_links_the_explorer(workdir, tmp_path):
    from skillneurons_jax.analysis import report
    out = report.build_report(workdir, tmp_path / "report", {"analysis": {"n_permutations": 10,
                                                                         "type_permutations": 10}})
    page = tmp_path / "report" / "explorer.html"
    assert page.exists() and '<a href="explorer.html">' in out.index_html.read_text()
    assert "](explorer.html)" in out.index_md.read_text()
    assert json.loads(out.summary.read_text())["explorer"] == "explorer.html"
    data = json.loads(page.read_text().split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert sorted(data["models"]) == [MODEL]
