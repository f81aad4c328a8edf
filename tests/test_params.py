import pytest
import yaml

from pipelines.common import params as params_mod
from tests.conftest import ROOT


def project_params() -> dict:
    """The project's params.yaml as a dict, to change one value of."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def load_raw(tmp_path, raw: dict) -> params_mod.Params:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return params_mod.load(tmp_path / "params.yaml")


def test_project_params_load_with_every_section():
    p = params_mod.load(ROOT / "params.yaml")
    assert p.train.quantization == "4bit"
    assert p.registry.model_name
    assert len(p.digest()) == 12


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    raw = project_params()
    raw["train"]["learning_rte"] = 0.1
    with pytest.raises(params_mod.ParamsError, match="train.learning_rte"):
        load_raw(tmp_path, raw)


def test_missing_key_is_an_error_naming_the_key(tmp_path):
    raw = project_params()
    del raw["evaluate"]["replay_examples"]
    with pytest.raises(params_mod.ParamsError, match="evaluate.replay_examples"):
        load_raw(tmp_path, raw)


def test_gate_thresholds_are_checked_per_metric(tmp_path):
    raw = project_params()
    raw["gate"]["thresholds"]["golden.eval_loss"] = {"max_increse": 0.1}
    with pytest.raises(params_mod.ParamsError, match=r"gate.thresholds.golden.eval_loss.max_increse"):
        load_raw(tmp_path, raw)
    raw["gate"]["thresholds"]["golden.eval_loss"] = {}
    with pytest.raises(params_mod.ParamsError, match="at least one of"):
        load_raw(tmp_path, raw)


def test_bad_quantization_value_is_rejected(tmp_path):
    raw = project_params()
    raw["train"]["quantization"] = "8bit"
    with pytest.raises(params_mod.ParamsError, match="quantization"):
        load_raw(tmp_path, raw)


@pytest.mark.parametrize("key,value,message", [("lr_scheduler", "cosine_annealing", "one of linear, cosine"),
                                               ("warmup_ratio", 1.5, r"in \[0, 1\)"),
                                               ("max_steps", 0, "at least 1 or null")])
def test_bad_schedule_values_are_rejected_with_what_is_allowed(tmp_path, key, value, message):
    raw = project_params()
    raw["train"][key] = value
    with pytest.raises(params_mod.ParamsError, match=f"train.{key} must be .*{message}"):
        load_raw(tmp_path, raw)


def test_missing_file_says_how_to_make_a_workspace(tmp_path):
    with pytest.raises(params_mod.ParamsError, match="nightshift init"):
        params_mod.load(tmp_path / "params.yaml")


@pytest.mark.parametrize("section,key,value", [("train", "learning_rate", "fast"),
                                               ("train", "epochs", 2.5),
                                               ("registry", "auto_promote", "yes"),
                                               ("train", "target_modules", "q_proj"),
                                               ("train", "max_steps", 2.5),
                                               ("train", "packing", "yes")])
def test_a_value_of_the_wrong_type_is_an_error_naming_key_and_type(tmp_path, section, key, value):
    raw = project_params()
    raw[section][key] = value
    with pytest.raises(params_mod.ParamsError, match=f"{section}.{key} must be"):
        load_raw(tmp_path, raw)


@pytest.mark.parametrize("key,value,message", [
    ("timezone", "Mars/Olympus_Mons", "not an IANA time zone name"),
    ("cron", "30 2 * *", "not a cron expression"),
    ("deployment", "nightly/x", "without '/'"),
])
def test_a_bad_schedule_is_an_error_that_says_what_is_expected(tmp_path, key, value, message):
    raw = project_params()
    raw["schedule"][key] = value
    with pytest.raises(params_mod.ParamsError, match=f"schedule.{key}.*{message}"):
        load_raw(tmp_path, raw)


def test_yesterday_is_taken_on_the_schedules_clock():
    import datetime as dt

    p = params_mod.load(ROOT / "params.yaml")
    at = dt.datetime(2026, 3, 10, 23, 30, tzinfo=dt.timezone.utc)  # already the 11th in Tokyo
    tokyo = params_mod.ScheduleParams("x", "30 2 * * *", "Asia/Tokyo")
    assert tokyo.yesterday(at) == dt.date(2026, 3, 10)
    assert params_mod.ScheduleParams("x", "30 2 * * *", "UTC").yesterday(at) == dt.date(2026, 3, 9)
    assert p.schedule.timezone == "UTC"


def test_retry_counts_beyond_what_mlflow_and_prefect_take_are_errors(tmp_path):
    raw = project_params()
    from prefect.tasks import exponential_backoff

    raw["registry"]["retries"] = 11
    with pytest.raises(params_mod.ParamsError, match="registry.retries must be between 0 and 10"):
        load_raw(tmp_path, raw)
    raw["registry"]["retries"] = 7
    raw["version"]["retries"] = 51
    with pytest.raises(params_mod.ParamsError, match="version.retries must be between 0 and 50"):
        load_raw(tmp_path, raw)
    version = params_mod.load(ROOT / "params.yaml").version
    assert exponential_backoff(version.retry_backoff_seconds)(version.retries) == [10, 20, 40]


def test_a_trend_history_shorter_than_the_trend_window_is_an_error(tmp_path):
    raw = project_params()
    raw["model_drift"]["trend_history"] = raw["model_drift"]["trend_window"] - 1
    with pytest.raises(params_mod.ParamsError, match="model_drift.trend_history .* must be at least model_drift.trend_window"):
        load_raw(tmp_path, raw)


@pytest.mark.parametrize("old,new", [("base", "base_model"), ("source", "ingest"), ("retries", "registry.retries")])
def test_a_section_of_an_older_params_yaml_says_where_its_keys_went(tmp_path, old, new):
    raw = project_params()
    raw[old] = {}
    with pytest.raises(params_mod.ParamsError, match=f"{old} is now {new}"):
        load_raw(tmp_path, raw)


def test_a_model_drift_key_left_in_drift_says_where_it_went(tmp_path):
    raw = project_params()
    raw["drift"]["max_output_kl"] = 0.5
    with pytest.raises(params_mod.ParamsError, match="drift.max_output_kl is now model_drift.max_output_kl"):
        load_raw(tmp_path, raw)


def test_replacing_a_value_is_checked_like_loading_it(params):
    """Sections are validated on every construction: dataclasses.replace included."""
    import dataclasses

    with pytest.raises(params_mod.ParamsError, match="TrainParams.epochs must be at least 1, not 0"):
        dataclasses.replace(params.train, epochs=0)


def test_copying_shares_that_leave_no_plain_text_in_a_batch_are_an_error(tmp_path):
    raw = project_params()
    raw["base_model"].update(copy_share=0.5, copy_chat_share=0.5)
    with pytest.raises(params_mod.ParamsError, match="copy_share \\+ base_model.copy_chat_share is 1.0"):
        load_raw(tmp_path, raw)
