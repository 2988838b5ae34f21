"""The leaderboard site: from fabricated records, hostile names stay inert, hidden stays hidden."""

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.leaderboard.site import build_site
from harness.store.results import ResultsStore

from records import make_record, register

XSS_NAME = "<script>alert(1)</script>"
XSS_SOURCE = ('"""A layer."""\n# </textarea><script>alert(2)</script>\nfrom torch import nn\n'
              'CustomNorm = nn.BatchNorm2d\n')
HIDDEN_VALUE = 91.2345  # appears only in a hidden cell


def populate(root: Path) -> ResultsStore:
    store = ResultsStore(root)
    entries = {  # name: (kind, final, public scores, hidden scores)
        "batch_norm": ("baseline", True, [80.0, 82.0], [60.0, 62.0]),
        "group_norm": ("baseline", True, [70.0, 71.0], [55.0, 57.0]),
        XSS_NAME: ("submission", False, [75.0, 77.0], None),
        "zeta": ("submission", True, [84.0, 86.0], [HIDDEN_VALUE, HIDDEN_VALUE]),
    }
    for i, (name, (kind, final, public, hidden)) in enumerate(entries.items()):
        src = root.parent / f"src{i}.py"
        src.write_text(XSS_SOURCE if name == XSS_NAME else f"# {name}\nfrom torch import nn\n")
        _, sha = store.store_submission(src)
        store.register_entry(name, kind, sha, "smoke", final, str(src))
        for seed, acc in enumerate(public):
            store.add(make_record(name, sha, "resnet20-digits", seed, acc, kind=kind, final=final,
                                  batch_dependent=(name == "group_norm")))
        for seed, acc in enumerate(hidden or []):
            store.add(make_record(name, sha, "resnet56-digits", seed, acc, kind=kind, final=final))
    return store


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Built once: the tests below only read it."""
    root = tmp_path_factory.mktemp("leaderboard")
    populate(root / "results")
    build_site(root / "results", root / "site")
    return root / "site"


def all_text(site: Path) -> str:
    return "\n".join(p.read_text() for p in site.rglob("*") if p.is_file())


def test_pages_and_exports_exist(site):
    assert (site / "index.html").exists()
    assert len(list((site / "entries").glob("*.html"))) == 4
    rows = list(csv.DictReader(open(site / "leaderboard.csv")))
    assert {r["entry"] for r in rows} == {"batch_norm", "group_norm", XSS_NAME, "zeta"}
    data = json.loads((site / "leaderboard.json").read_text())
    assert len(data["rows"]) == 4 and data["generated"]["reveal_hidden"] is False


def test_entry_pages_show_the_training_dynamics(site):
    from harness.store.results import entry_slug

    page = (site / "entries" / f"{entry_slug('zeta')}.html").read_text()
    public = page.split("<h2>resnet20-digits")[1].split("<h2>")[0]
    for alt in ("test accuracy and losses per epoch", "gradient L2 norm per layer",
                "mean and std of each norm layer's output"):
        assert f'alt="{alt} for resnet20-digits" src="data:image/svg+xml;base64,' in public
    assert "epochs to 90%" in public and "inference (ms / batch)" in public
    assert "<td>10.00</td>" in public and "<td>11.00</td>" in public  # seeds 0 and 1's latency
    # 3-epoch runs measure no convergence speed: n/a, as markup (not escaped into the text)
    assert public.count('title="fewer than 10 epochs: not measurable">n/a</span>') == 8  # 2 seeds x 4
    assert "&lt;span" not in page
    hidden = page.split("<h2>resnet56-digits")[1]
    assert "data:image/svg" not in hidden  # a hidden setting shows no figures either


def test_hostile_name_and_source_render_inert(site):
    index = (site / "index.html").read_text()
    assert XSS_NAME not in index and "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    assert index.count("<script") == 1  # the sort script, ours
    for page in (site / "entries").glob("*.html"):
        html = page.read_text()
        assert "<script" not in html and "</textarea><script>" not in html
    pages = "\n".join(p.read_text() for p in (site / "entries").glob("*.html"))
    assert "&lt;/textarea&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in pages


@pytest.mark.slow
def test_csv_cells_a_spreadsheet_would_run_are_neutralised(tmp_path):
    """An entry named like a formula (=, +, -, @) is text in leaderboard.csv (OWASP's CSV
    injection advice); numbers stay numbers."""
    from harness.leaderboard.site import csv_cell

    store = ResultsStore(tmp_path / "results")
    names = ['=HYPERLINK("http://x.example","win")', "+1+1", "-2+3", "@SUM(A1)"]
    for i, name in enumerate(names):
        src = tmp_path / f"f{i}.py"
        src.write_text(f"# {i}\nfrom torch import nn\nCustomNorm = nn.BatchNorm2d\n")
        _, sha = store.store_submission(src)
        store.register_entry(name, "submission", sha, "smoke", False, str(src))
        store.add(make_record(name, sha, "resnet20-digits", 0, 70.0 + i))
    build_site(tmp_path / "results", tmp_path / "site")
    rows = list(csv.DictReader(open(tmp_path / "site" / "leaderboard.csv")))
    assert sorted(r["entry"] for r in rows) == sorted("'" + n for n in names)
    assert csv_cell(-0.5) == -0.5 and csv_cell("plain") == "plain"


def test_entry_pages_say_how_it_was_run(tmp_path):
    """The scan's findings, the policy, --trust-code, sandboxing and the submission's own account
    are on the entry's page."""
    store = ResultsStore(tmp_path / "results")
    src = tmp_path / "f.py"
    src.write_text("from torch import nn\nCustomNorm = nn.BatchNorm2d\n")
    _, sha = store.store_submission(src)
    store.register_entry("mine", "submission", sha, "smoke", False, str(src))
    record = make_record("mine", sha, "resnet20-digits", 0, 70.0)
    record.update({"scan": {"policy": "refuse", "trust_code": True, "findings": [
                       {"line": 3, "what": "imports os (the file system)", "severity": "refuse"}]},
                   "isolation": {"sandboxed": True, "sandbox": "bubblewrap", "scored_by": "x"},
                   "reported": ["epochs.train_loss", "probes"]})
    store.add(record)
    build_site(tmp_path / "results", tmp_path / "site")
    (page,) = (tmp_path / "site" / "entries").glob("*.html")
    text = page.read_text()
    assert "run with --trust-code" in text and "imports os (the file system)" in text
    assert "yes (split: training without the test set, scoring without labels)" in text
    assert "epochs.train_loss, probes" in text and "policy refuse" in text


def test_no_network_assets(site):
    for page in site.rglob("*.html"):
        html = page.read_text()
        assert 'src="http' not in html and 'href="http' not in html and "@import" not in html


@pytest.mark.slow
def test_hidden_results_are_masked_unless_revealed(tmp_path, site):
    text = all_text(site)
    assert f"{HIDDEN_VALUE:.2f}" not in text and str(HIDDEN_VALUE) not in text
    index = (site / "index.html").read_text()
    assert ">hidden</td>" in index  # final entries
    assert "&mdash;" in index  # the non-final submission: not run
    revealed = tmp_path / "revealed"
    build_site(site.parent / "results", revealed, reveal_hidden=True)
    assert f"{HIDDEN_VALUE:.2f}" in (revealed / "index.html").read_text()
    assert "aggregate (all settings)" in (revealed / "index.html").read_text()


def test_best_is_highlighted_and_flags_shown(site):
    index = (site / "index.html").read_text()
    best_cell = index.split('class="best"')[1].split("</td>")[0]
    assert "85.00" in best_cell  # zeta's public mean
    assert "batch-dependent" in index


@pytest.mark.slow
def test_cli_build(tmp_path):
    populate(tmp_path / "results")
    result = CliRunner().invoke(main, ["leaderboard", "build", "--results", str(tmp_path / "results"),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and (tmp_path / "out" / "index.html").exists()
    missing = CliRunner().invoke(main, ["leaderboard", "build", "--results", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "no results folder" in missing.stderr


def _chrome(tmp_path):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        if os.environ.get("HARNESS_REQUIRE_BROWSER"):
            pytest.fail("HARNESS_REQUIRE_BROWSER is set but chromium/chromedriver are not installed")
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    pytest.importorskip("selenium")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1300,900", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_in_a_real_browser(tmp_path, site):
    from selenium.webdriver.common.by import By

    driver = _chrome(tmp_path)
    try:
        driver.get((site / "index.html").resolve().as_uri())
        cells = "table.leaderboard tbody td.name:nth-child(3)"
        names = lambda: [td.text.split("\n")[0].replace(" baseline", "").replace(" final", "").strip()  # noqa: E731
                         for td in driver.find_elements(By.CSS_SELECTOR, cells)]
        before = names()
        assert len(before) == 4
        header = next(th for th in driver.find_elements(By.CSS_SELECTOR, "table.leaderboard thead th")
                      if th.text.strip().startswith("entry"))
        header.click()
        after = names()
        assert after != before and after == sorted(after, key=str.lower)
        column = next(th for th in driver.find_elements(By.CSS_SELECTOR, "table.leaderboard thead th")
                      if th.text.strip().startswith("resnet20-digits"))
        column.click()
        assert names()[0] == "zeta"  # highest first
        column.click()
        assert names()[0] == "group_norm"  # then lowest first
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        # Uncertainty and flags without hovering: the forest plot is drawn, the legend explains
        forest = driver.find_element(By.CSS_SELECTOR, ".forests img")
        assert forest.is_displayed() and driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", forest) > 200
        legend = driver.find_element(By.CSS_SELECTOR, "section.legend")
        assert "batch-dependent" in legend.text and "how the test set is batched" in legend.text
        assert "[" in driver.find_element(By.CSS_SELECTOR, "table.leaderboard td .ci").text
        driver.set_window_size(1400, 2200)
        shot = tmp_path / "leaderboard.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        driver.get(next((site / "entries").glob("group_norm*.html")).resolve().as_uri())
        assert "how the test set is batched" in driver.find_element(By.TAG_NAME, "body").text
        entry_shot = tmp_path / "entry.png"
        assert driver.save_screenshot(str(entry_shot)) and entry_shot.stat().st_size > 10_000
        if os.environ.get("HARNESS_ARTIFACTS"):
            Path(os.environ["HARNESS_ARTIFACTS"]).mkdir(parents=True, exist_ok=True)
            for s in (shot, entry_shot):
                shutil.copy(s, Path(os.environ["HARNESS_ARTIFACTS"]) / s.name)
    finally:
        driver.quit()


def test_diverged_and_chance_runs_are_flagged_on_both_pages(tmp_path):
    store = ResultsStore(tmp_path / "results")
    src = tmp_path / "s.py"
    src.write_text("from torch import nn\nCustomNorm = nn.BatchNorm2d\n")
    _, sha = store.store_submission(src)
    store.register_entry("wobbly", "submission", sha, "smoke", False, str(src))
    store.add(make_record("wobbly", sha, "resnet20-digits", 0, 81.0))
    diverged = make_record("wobbly", sha, "resnet20-digits", 1, 79.0, status="diverged")
    diverged["flags"] = ["diverged"]
    store.add(diverged)
    chance = make_record("wobbly", sha, "resnet20-digits", 2, 12.0)
    chance["flags"] = ["chance"]
    store.add(chance)
    build_site(tmp_path / "results", tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert '<span class="chip diverged">diverged</span>' in index
    assert '<span class="chip chance">chance</span>' in index
    (page,) = (tmp_path / "site" / "entries").glob("*.html")
    text = page.read_text()
    assert text.count('<span class="chip chance">chance</span>') == 1  # on seed 2's row only
    assert "&dagger;" in text and "the best accuracy before the loss or a parameter" in text


def test_the_board_is_grouped_by_track(tmp_path):
    """Suites of several tracks: one section per track, the CNN's first, each suite's table in its
    track's section; the exports name the track."""
    store = populate(tmp_path / "results")
    src = tmp_path / "mlp_layer.py"
    src.write_text("from torch import nn\nCustomNorm = nn.BatchNorm1d\nTRACKS = ('mlp',)\n")
    _, sha = store.store_submission(src)
    store.register_entry("mlp-entry", "submission", sha, "mlp_smoke", False, str(src))
    for seed in (0, 1):
        store.add(make_record("mlp-entry", sha, "mlp3x100-breast_cancer", seed, 97.0 + seed,
                              suite="mlp_smoke"))
    build_site(tmp_path / "results", tmp_path / "site")
    html = (tmp_path / "site" / "index.html").read_text()
    cnn, mlp = html.index('id="track-cnn"'), html.index('id="track-mlp"')
    assert cnn < html.index('id="suite-smoke"') < mlp < html.index('id="suite-mlp_smoke"')
    rows = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["rows"]
    assert {(r["track"], r["suite"]) for r in rows} == {("cnn", "smoke"), ("mlp", "mlp_smoke")}


def test_runs_left_out_of_the_board_are_counted_and_explained(tmp_path):
    store = ResultsStore(tmp_path / "results")
    for seed in range(2):
        record = make_record("adhoc", "e" * 64, "resnet20-digits", seed, 70.0)
        record.pop("entry", None)
        record.pop("entry_kind", None)
        store.add(record)
    result = CliRunner().invoke(main, ["leaderboard", "build", "--results", str(tmp_path / "results"),
                                       "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    assert "left out 2 runs of `harness eval`" in result.output
    index = (tmp_path / "site" / "index.html").read_text()
    assert "No entries yet" in index and "Not on the board: 2 runs of `harness eval`" in index


def test_the_index_shows_uncertainty_and_curves_without_hovering(site):
    index = (site / "index.html").read_text()
    assert index.count('<div class="forests">') == 1 and "data:image/svg+xml;base64," in index
    assert "Every entry's curves, per setting" in index
    assert '<span class="ci">[' in index  # the interval in the cell's text
    assert "Groups: entries that share a letter are not significantly different" in index
    assert "<strong>Cell</strong>" in index and "**Cell**" not in index  # the notes as HTML


def test_the_published_numbers_beside_ours_with_the_gap(tmp_path):
    import leaderboard.stats as S
    from harness.protocol.published import published

    store = ResultsStore(tmp_path / "results")
    sha = register(store, tmp_path, "group_norm", "baseline", "default", final=True)
    ours = [93.0, 93.3, 93.1]
    for seed, acc in zip((42, 123, 456), ours):
        store.add(make_record("group_norm", sha, "mobilenetv2-fmnist", seed, acc, kind="baseline",
                              suite="default", final=True))
    build_site(tmp_path / "results", tmp_path / "site")
    index = (tmp_path / "site" / "index.html").read_text()
    assert "Published by the reference benchmark: not produced by this harness" in index
    assert "93.16 (42), 93.02 (123), 93.42 (456)" in index
    theirs = list(published().of("mobilenetv2-fmnist")["group_norm"].values())
    low, high = S.difference_interval(ours, theirs)
    gap = sum(ours) / 3 - sum(theirs) / 3
    assert f"<td>{gap:.2f}</td><td>[{low:.2f}, {high:.2f}]</td>" in index
    assert "resnet110-cifar100" not in index.split("Published by the reference")[1].split("</table>")[0]


def test_the_welch_interval_of_a_difference():
    import leaderboard.stats as S

    low, high = S.difference_interval([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert (low + high) / 2 == pytest.approx(-3.0)
    assert high - low == pytest.approx(2 * 2.7764451 * (2 / 3) ** 0.5, rel=1e-6)  # df = 4


def test_a_column_declared_once_reaches_the_page_and_both_exports(tmp_path, monkeypatch):
    """Adding a board column is one Column in leaderboard/columns.py: the header, each row's
    cell (sortable by its number) and the CSV and JSON exports all follow the declaration."""
    from harness.leaderboard import columns, site

    runs = columns.Column("runs", "runs", "runs shown in this row", digits=0,
                          value=lambda r: sum(c["cell"].n for c in r.cells.values() if c["cell"]))
    monkeypatch.setattr(site, "COLUMNS", [*columns.COLUMNS, runs])
    monkeypatch.setattr(site, "TAIL", [*columns.TAIL, runs])
    populate(tmp_path / "results")
    build_site(tmp_path / "results", tmp_path / "site")
    page = (tmp_path / "site" / "index.html").read_text()
    header = page.split("<thead>")[1].split("</thead>")[0]
    assert 'data-type="num" title="runs shown in this row">runs</th>' in header
    assert 'colspan="4">aggregate' in header  # the group header spans the new column too
    row = next(r for r in page.split("<tr>") if ">zeta</a>" in r)
    assert '<td data-sort="2.0000">2</td>' in row  # zeta's two public runs (hidden not revealed)
    rows = {r["entry"]: r for r in csv.DictReader(open(tmp_path / "site" / "leaderboard.csv"))}
    assert rows["zeta"]["runs"] == "2" and rows["batch_norm"]["runs"] == "2"
    data = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    assert {r["entry"]: r["runs"] for r in data["rows"]}["group_norm"] == 2
