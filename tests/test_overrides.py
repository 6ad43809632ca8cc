"""Command-line overrides checked against the config before Hydra composes it."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from batteryct.errors import ConfigError
from batteryct.overrides import check_overrides
from tests.entry_point import ROOT

CONF = ROOT / "conf"
ENTRY_POINTS = ("train", "predict", "synth", "prepare", "analyze", "evaluate")


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        ("train", ["trainer.max_epoch=1"], "'trainer' of train.yaml has no key 'max_epoch'"),
        ("train", ["sead=3"], "the top level of train.yaml has no key 'sead'"),
        ("predict", ["inference.overlapp=0.5"], "'inference' of predict.yaml has no key"),
        # `+` adds nothing that is read: Trainer takes no max_epoch, nobody reads a top-level sead
        ("train", ["+trainer.max_epoch=1"], "nothing would read it"),
        ("train", ["+sead=3"], "nothing would read it"),
        # a key of only some sweep choices: the cosine schedule of scale=laptop has no factor
        (
            "train",
            ["scale=paper,laptop", "model.module.scheduler.factor=0.3"],
            "'model.module.scheduler' of train.yaml has no key 'factor'",
        ),
    ],
)
def test_a_misspelt_key_names_the_valid_keys_of_its_group(
    config: str, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        check_overrides(CONF, config, overrides)
    text = str(raised.value)
    assert "Valid keys of" in text
    wrong = overrides[-1].lstrip("+").split("=")[0].rsplit(".", 1)[-1]
    right = {"max_epoch": "max_epochs", "sead": "seed", "overlapp": "overlap"}.get(wrong)
    if right:
        assert f"Did you mean '{right}'?" in text
    assert f"+{overrides[-1]}" not in text  # no advice to add a setting nothing reads


def test_plus_is_suggested_only_for_an_argument_the_target_takes() -> None:
    with pytest.raises(ConfigError, match=r"add it with \+trainer.reload_dataloaders"):
        check_overrides(CONF, "train", ["trainer.reload_dataloaders_every_n_epochs=1"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.max_epochs=3", "seed=1,2", "hydra.run.dir=/tmp/x", "trainer=ddp_cpu"],
        ["experiment=iter1_inplane", "model/net=resunet7", "data.patch_size=[64,64]"],
        ["model/scheduler@model.module.scheduler=plateau", "model.module.scheduler.factor=0.3"],
        ["+trainer.reload_dataloaders_every_n_epochs=1", "+model.module.optimizer.amsgrad=true"],
        ["+data.label_map.mapping.my_phase=pit"],  # an entry of the LabelMap's mapping
        ["+callbacks.swa={_target_:lightning.pytorch.callbacks.StochasticWeightAveraging}"],
        ["trainer=no_such_preset"],  # Hydra lists the presets itself
    ],
)
def test_valid_overrides_pass(overrides: list[str]) -> None:
    check_overrides(CONF, "train", overrides)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_checks_its_overrides(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location(f"entry_{name}", ROOT / f"{name}.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "no_such_key=1"])
    with pytest.raises(SystemExit) as exited:
        script.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("batteryct: error: `no_such_key=1`: the top level of")
    assert err.count("\n") == 1
