"""Cache keys stay what they were: a store rendered before a change stays fully cached after it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_main

# Recorded with the flat layout before the stage folders (commit 88af411), with the library versions
# fixed as below, so that only reportgen's own key recipe is under test.
VERSIONS = {"diffusers": "0.42.1", "torch": "2.13.0+cpu"}
KEYS = {
    (3031912972, "k_euler", 2): "2137622ec4b36d95744129036267e0a99690b902b8ef713664cf92ab259015e1",
    (3031912972, "k_euler", 4): "4f2fcd632b557826a3c8af67112d76140814fc0b17dbf17554d28fd985cd8edb",
    (3031912972, "k_heun", 2): "cc594f1ea8091262dd8e9a0eae973bba69fb7141d6e2af8ef07c40928f92c09f",
    (3031912972, "k_heun", 4): "c0719fcbad6cad0e1d37a2e838174ea3c8df1034ba89d874cb9c2dd2ff83c089",
    (3031912972, "ddim", 2): "a7ccdf149c2b5fa201323a374cc45c4c5e730650b7d072305381cb83c79e6bb1",
    (3031912972, "ddim", 4): "2eb9c1fac15a16e8ef06b6bd97002feae19b018f5a6dd7825d0d5884964f9d70",
    (3031912972, "dpmpp_2m_karras", 2): "a8594577963864c11f2ef69d42984d0f9be9cbf49e559cd66554259892dfe9e0",
    (3031912972, "dpmpp_2m_karras", 4): "9b9eae6c5895acbdae6d0efc4383167496aa4fb55a17b762e0f77517bd5f029a",
    (3031912973, "k_euler", 2): "b129973da475a7ab3e34e00b2c13f9c6258c63d8ea55ce026f1399e3df430b51",
    (3031912973, "k_euler", 4): "83458ade442b806d4355b596f201399f6207d9caf11c34159f1ddc4d450e13d3",
    (3031912973, "k_heun", 2): "1804dcd8050443e6bac6e7945d54d0abb5df613ab4b25547fbe18434f5d7d256",
    (3031912973, "k_heun", 4): "8de3cf606bc5b565dc564714041d488c1dfb08beffac307a5435fcf9cf06a26c",
    (3031912973, "ddim", 2): "e3ce497d41c79bfd94a4bca826bb72d2ffdc488cab04bc0891c3d0a0a4503269",
    (3031912973, "ddim", 4): "eed04dec29ce266c6a3c768c57bf1c80745f9d8f8f2522ba577f8e716875ffc0",
    (3031912973, "dpmpp_2m_karras", 2): "57219dcd768312823e41554adf37e8afe85ee79932df7b4300a3d88c736910dc",
    (3031912973, "dpmpp_2m_karras", 4): "a84625e52ce50df2433ddfaac2f25823d6cab23dd372c7572056877f5e08615b",
}

REFERENCE_KEYS = {  # recorded when reference_steps came (issue 20), with the versions above
    (3031912972, "k_heun", 16): "9c3674c084d5e5235c944c1beb84a8e32a74c7ff26f0cdc0f4e61ab027963d44",
    (3031912973, "k_heun", 16): "b84850cb57527afbcd78c146464c00a3163cce4b50801d4d4199beccceb11f9e",
}


@pytest.fixture
def pinned_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The library versions in every key fixed to the recorded ones."""
    from reportgen.render import plan

    real = plan.runtime_environment
    monkeypatch.setattr(plan, "runtime_environment", lambda *args: {**real(*args), **VERSIONS})


def test_rendered_keys_equal_the_recorded_ones(tmp_path: Path, capsys, monkeypatch, pinned_versions) -> None:
    from reportgen.render.store import Store

    root = tmp_path / "study"
    (root / "topics").mkdir(parents=True)
    (root / "study.toml").write_text('title = "Keys"\nmodel = "tiny"\n'
                                     'samplers = ["k_euler", "k_heun", "ddim", "dpmpp_2m_karras"]\n'
                                     'steps = [2, 4]\nseeds = 2\n')
    (root / "topics" / "anime.md").write_text(
        "---\ntitle: Anime\nprompt: '\"an anime girl [blurry]\" -W32 -H32 -C7.5 -S3031912972'\norder: 0\n"
        "---\n\nText.\n")
    code, err = run_main(capsys, monkeypatch, "render", root, "--device", "cpu")
    assert code == 0, err
    cells = list(Store(root / "store").cells())
    stored = {(c.record["seed"], c.record["sampler"], c.record["steps"]): c.key for c in cells
              if not c.record.get("reference")}
    assert stored == KEYS
    # With no reference_steps the study also renders the reference (k_heun at 4 x 4 steps) beside the matrix, as
    # extra cells with keys of their own: the matrix's keys above are the ones recorded before it existed.
    references = {(c.record["seed"], c.record["sampler"], c.record["steps"]): c.key for c in cells
                  if c.record.get("reference")}
    assert references == REFERENCE_KEYS
    code, err = run_main(capsys, monkeypatch, "render", root, "--device", "cpu")
    assert code == 0 and "18 cached, 0 to render" in err, err


def test_dpmpp_2m_with_karras_has_the_keys_of_dpmpp_2m_karras(tmp_path: Path, pinned_versions) -> None:
    """A study naming dpmpp_2m with the karras schedule finds the cells a store rendered as dpmpp_2m_karras: the
    keys pinned in tests/render/test_keys.py (the same scheduler config, the preset's name in the key)."""
    from conftest import write_study

    from reportgen.render import jobs

    topic = {"anime": '"an anime girl [blurry]" -W32 -H32 -C7.5 -S3031912972'}
    study = write_study(tmp_path / "s", samplers=["dpmpp_2m", "k_euler"], steps=[2, 4], topics=topic, seeds=2,
                        extra='schedules = ["default", "karras"]\ncfg = [7.5]\n')
    cells = jobs.prepare_render(study, device="cpu").plan.cells
    keys = {(c.seed, c.sampler, c.schedule_type, c.steps): c.key for c in cells}
    for seed in (3031912972, 3031912973):
        for n in (2, 4):
            assert keys[(seed, "dpmpp_2m", "karras", n)] == KEYS[(seed, "dpmpp_2m_karras", n)]
            assert keys[(seed, "k_euler", "default", n)] == KEYS[(seed, "k_euler", n)]  # cfg 7.5: the topic's -C
            assert keys[(seed, "k_euler", "karras", n)] not in KEYS.values()
    assert len(set(keys.values())) == len(keys)
