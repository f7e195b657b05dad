"""Property-based tests of the readers of what users and other programs write: the config
file and ``--set`` parser, ``metrics.jsonl``, ``results.json`` and safetensors weights files.

The property: any input ends in a valid object or in the project's one-line error (a
``RobustlabError``, ``ConfigError`` or ``ValueError``, which the command line prints as one
line), never another exception, and never an allocation sized by a number nobody checked.
"""

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustlab.config import ConfigError, ExperimentConfig, check_ranges, load_config
from robustlab.errors import RobustlabError
from robustlab.runs.checkpoint import WeightsError, load_model, read_weights
from robustlab.runs.store import MetricsError, Run

ONE_LINE_ERRORS = (RobustlabError, ConfigError, ValueError, FileNotFoundError)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def _one_line(error: BaseException) -> None:
    assert isinstance(error, ONE_LINE_ERRORS), f"{type(error).__name__}: {error}"
    assert str(error).strip() and "\n" not in str(error).strip(), repr(str(error))


# ---------------------------------------------------------------------------------------
# The config and --set

DOTTED_KEYS = [
    f"{section}.{name}"
    for section, value in ExperimentConfig().to_dict().items()
    if isinstance(value, dict)
    for name in value
] + ["name", "seed", "model.kwargs", "nosuch.key", "optim"]

yaml_scalars = st.one_of(
    st.text(max_size=20),
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["[", "{a: 1", "&a [*a]", "!!python/object:os.system", "- 1", "{x: [1, {y: 2}]}", ".nan", "~"]),
)


@FUZZ
@given(key=st.sampled_from(DOTTED_KEYS) | st.text(max_size=15), value=yaml_scalars)
def test_any_set_override_is_a_config_or_one_line_error(key, value):
    try:
        config = load_config("digits", [f"{key}={value}"])
        check_ranges(config)
    except Exception as error:
        _one_line(error)
    else:
        assert isinstance(config, ExperimentConfig)


@FUZZ
@given(
    text=st.text(max_size=200)
    | st.builds(lambda k, v: f"{k.replace('.', ': {')}: {v}", st.sampled_from(DOTTED_KEYS), yaml_scalars)
)
def test_any_config_file_is_a_config_or_one_line_error(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    try:
        config = load_config(path)
        check_ranges(config)
    except Exception as error:
        _one_line(error)
    else:
        assert isinstance(config, ExperimentConfig)


# ---------------------------------------------------------------------------------------
# metrics.jsonl

metrics_lines = st.lists(
    st.one_of(
        st.builds(
            lambda step, loss: json.dumps({"epoch": 1, "step": step, "train_loss": loss}),
            st.integers(0, 99),
            st.floats(),
        ),
        st.text(max_size=30),
        st.sampled_from(['{"step": "3"}', "[1, 2]", "5", '{"step": true}', '{"epoch": 2, "st']),
    ),
    max_size=8,
)


@FUZZ
@given(lines=metrics_lines, tail=st.binary(max_size=20), step=st.integers(-1, 120))
def test_any_metrics_file_is_read_or_refused_and_rewinding_never_loses_a_byte(tmp_path, lines, tail, step):
    run = Run(tmp_path / "run")
    run.path.mkdir(exist_ok=True)
    for old in run.path.iterdir():
        old.unlink()
    data = "".join(line.replace("\n", " ") + "\n" for line in lines).encode() + tail
    run.metrics_path.write_bytes(data)
    try:
        records = run.metrics()
    except Exception as error:
        _one_line(error)
        assert isinstance(error, MetricsError) and str(run.metrics_path) in str(error)
        return
    assert all(isinstance(record, dict) for record in records)
    aside = run.rewind_metrics(step)
    kept = run.metrics_path.read_bytes()
    dropped = [r for r in records if not (r.get("step", 0) <= step and not r.get("final"))]
    assert len(kept.splitlines()) + len(dropped) == len(records)  # every sound record kept or retrained
    if aside is None:
        assert all(_sound(line) or not line.strip() for line in data.decode().split("\n"))
    else:
        assert data.endswith(aside.read_bytes())  # the damaged tail, byte for byte


def _sound(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and type(record.get("step", 0)) is int


# ---------------------------------------------------------------------------------------
# results.json

RESULTS = {
    "accuracy": 0.9,
    "cra": [{"eps": 36 / 255, "label": "36/255", "cra": 0.7}],
    "eval_split": "test",
    "n_eval": 360,
    "n_train": 1437,
    "lipschitz_constant": 1.0,
    "epochs": 2.0,
    "steps": 24,
    "train_time_s": 1.0,
    "time_per_epoch_s": 0.5,
    "eval_time_s": 0.1,
    "device": "cpu",
    "world_size": 1,
    "torch_version": "2.13.0",
}


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from([*RESULTS, "train_eval", "smoothing", "warnings"]), json_values, max_size=4
    ),
    removed=st.sets(st.sampled_from(list(RESULTS)), max_size=3),
)
def test_any_results_file_is_results_or_one_line_error(tmp_path, changes, removed):
    data = {key: value for key, value in {**RESULTS, **changes}.items() if key not in removed}
    run = Run(tmp_path)
    run.results_path.write_text(json.dumps(data))
    try:
        results = run.load_results()
    except Exception as error:
        _one_line(error)
        assert str(run.results_path) in str(error)
    else:
        assert 0 <= len(results.cra) <= len(json.dumps(data))


@FUZZ
@given(content=st.binary(max_size=60) | json_values.map(lambda value: json.dumps(value).encode()))
def test_any_bytes_as_results_file_are_one_line_error(tmp_path, content):
    run = Run(tmp_path)
    run.results_path.write_bytes(content)
    with pytest.raises(ONE_LINE_ERRORS) as raised:
        run.load_results()
    _one_line(raised.value)


# ---------------------------------------------------------------------------------------
# safetensors weights files


def _safetensors(header: dict, data: bytes = b"", declared_length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if declared_length is None else declared_length) + text + data


architectures = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["lipmlp-aol", "mlp", "nosuch", ""]),
        "input_shape": st.lists(st.integers(-2, 10**12), max_size=4) | json_values,
        "num_classes": st.integers(-2, 10**12) | json_values,
        "mean": st.lists(st.floats(), max_size=4) | json_values,
        "kwargs": st.dictionaries(st.sampled_from(["width", "depth", "bias"]), st.integers(-2, 10**9), max_size=2)
        | json_values,
        "version": st.integers(-1, 5),
    }
)


@FUZZ
@given(
    tensors=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "F64", "I64", "BOOL", "X9"]),
                "shape": st.lists(st.integers(-1, 2**40), max_size=3),
                "data_offsets": st.lists(st.integers(-1, 2**40), min_size=0, max_size=3),
            }
        ),
        max_size=3,
    ),
    data=st.binary(max_size=64),
    declared=st.none() | st.integers(0, 2**64 - 1),
    architecture=architectures | json_values,
)
def test_any_safetensors_file_loads_or_is_one_line_error(tmp_path, tensors, data, declared, architecture):
    path = tmp_path / "weights.safetensors"
    metadata = {"robustlab.architecture": json.dumps(architecture), "robustlab.form": "model"}
    path.write_bytes(_safetensors({**tensors, "__metadata__": metadata}, data, declared))
    try:
        read_weights(path)
        load_model(path)
    except Exception as error:
        _one_line(error)
        assert isinstance(error, WeightsError) and str(path) in str(error)


@FUZZ
@given(architecture=architectures)
def test_an_architecture_record_cannot_make_a_model_larger_than_its_weights(tmp_path, architecture):
    """A record that claims a model of a billion classes, with a few bytes of weights."""
    path = tmp_path / "weights.safetensors"
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    metadata = {"robustlab.architecture": json.dumps(architecture), "robustlab.form": "model"}
    path.write_bytes(_safetensors({**header, "__metadata__": metadata}, b"\0\0\0\0"))
    with pytest.raises(WeightsError) as raised:
        load_model(path)
    _one_line(raised.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"num_classes": 10**9}, "has num_classes 1000000000; expected 2 to 100000"),
        ({"input_shape": [1, 10**6, 10**6]}, "has input_shape [1, 1000000, 1000000]"),
        ({"kwargs": {"width": 10**6, "depth": 2}}, "describes a model of"),
        ({"power_iterations": 10**12}, "has power_iterations 1000000000000"),
    ],
)
def test_a_weights_file_that_claims_an_absurd_model_is_refused_before_it_is_built(tmp_path, change, expected):
    from safetensors.torch import save_file

    from robustlab.runs.checkpoint import create_from_architecture

    architecture = {"name": "lipmlp-aol", "input_shape": [1, 8, 8], "num_classes": 10, "mean": [0.5], "kwargs": {}}
    model = create_from_architecture({**architecture, "kwargs": {"width": 16, "depth": 1}}, 10)
    path = tmp_path / "weights.safetensors"
    state = {key: value.contiguous().clone() for key, value in model.state_dict().items()}
    record = {**architecture, "kwargs": {"width": 16, "depth": 1}, "version": 2, **change}
    save_file(state, str(path), metadata={"robustlab.architecture": json.dumps(record), "robustlab.form": "model"})
    with pytest.raises(WeightsError, match="architecture record") as raised:
        load_model(path)
    assert expected in str(raised.value)
