from __future__ import annotations

from pathlib import Path

import pytest

from stoic.errors import ConfigError
from stoic.settings import MOVED, Settings, load_settings
from stoic.values import RuntimeKind


def test_defaults_are_the_papers_parameters() -> None:
    s = load_settings()
    assert s.inquisitor.period_s == 60
    assert s.predictor.calibration_period == 10
    assert s.predictor.max_window == 100
    assert s.predictor.processing_history == 10
    assert s.predictor.deploy_timeout_s == 600
    assert [r.name for r in s.runtimes] == ["edge", "cpu", "gpu1", "gpu2"]
    assert s.runtime("gpu2").gpus == 2
    assert s.database_url.startswith("sqlite:///")


def test_toml_file_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "stoic.toml"
    cfg.write_text("[predictor]\nmax_window = 50\ncalibration_period = 5\n")
    monkeypatch.setenv("STOIC_PREDICTOR__MAX_WINDOW", "40")
    s = load_settings(cfg)
    assert s.predictor.max_window == 40  # env beats file
    assert s.predictor.calibration_period == 5  # file beats default


def test_yaml_runtimes(tmp_path: Path) -> None:
    cfg = tmp_path / "stoic.yaml"
    cfg.write_text("runtimes:\n  - {name: edge, kind: edge}\n  - {name: big, kind: gpu, gpus: 4}\n")
    s = load_settings(cfg)
    assert s.runtime("big").kind is RuntimeKind.GPU
    assert s.runtime("big").gpus == 4


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "[predictor]\nmax_window = 0\n",
            "predictor.max_window: Input should be greater than or equal to 1",
        ),
        ("[predictor]\ndeploy_timeout_s = -1\n", "predictor.deploy_timeout_s"),
        ("[predictor]\nbogus = 1\n", "predictor.bogus: Extra inputs are not permitted"),
        ("[[runtimes]]\nname = 'g'\nkind = 'gpu'\n", "gpus >= 1"),
        ("[predictor\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert needle in str(info.value)
    assert str(cfg) in str(info.value)


def test_env_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOIC_PREDICTOR__CALIBRATION_PERIOD", "zero")
    with pytest.raises(ConfigError, match=r"predictor\.calibration_period"):
        load_settings()


def test_unknown_runtime_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown runtime 'tpu'"):
        load_settings().runtime("tpu")


def test_moved_settings_are_read_under_their_old_names_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "stoic.toml"
    cfg.write_text(
        "[predictor]\ninquisitor_period_s = 30\nmax_window = 50\n"
        "[share]\nmin_gain_s = 2.5\nchunk_factor = 3\n"
    )
    monkeypatch.setenv("STOIC_REQUESTER__OBJECTIVE", "mean")
    monkeypatch.setenv("STOIC_CONTROLLER__BOOTSTRAP_TASKS_PER_RUNTIME", "3")
    with caplog.at_level("WARNING", logger="stoic.settings"):
        s = load_settings(cfg)
    assert (s.inquisitor.period_s, s.predictor.max_window) == (30, 50)
    assert (s.policy.share_min_gain_s, s.share.chunk_factor) == (2.5, 3)
    assert (s.policy.objective, s.policy.bootstrap_tasks_per_runtime) == ("mean", 3)
    warned = sorted(r.getMessage() for r in caplog.records)
    assert warned == [
        f"setting {old} is deprecated and goes in the next release; use {new}"
        for old, new in sorted(
            [
                ("controller.bootstrap_tasks_per_runtime", "policy.bootstrap_tasks_per_runtime"),
                ("predictor.inquisitor_period_s", "inquisitor.period_s"),
                ("requester.objective", "policy.objective"),
                ("share.min_gain_s", "policy.share_min_gain_s"),
            ]
        )
    ]


def test_a_moved_setting_given_under_both_names_takes_the_new_one() -> None:
    s = load_settings(
        inquisitor={"uplink_check_url": "http://new/"},
        predictor={"uplink_check_url": "http://old/"},
    )
    assert s.inquisitor.uplink_check_url == "http://new/"


def test_every_moved_setting_lands_on_a_field_of_its_new_section() -> None:
    for (old_section, old_key), (new_section, new_key) in MOVED.items():
        assert old_key not in type(getattr(Settings(), old_section)).model_fields
        assert new_key in type(getattr(Settings(), new_section)).model_fields
