"""The one configuration system: typed dataclasses, YAML presets, ``--set`` overrides.

A config is a tree of dataclasses. YAML files and ``key=value`` overrides are checked
against it: an unknown key, a value of the wrong type or a choice outside its list is a
``ConfigError`` that says what was wrong and what would be right. Floats may be written
as fractions (``36/255``) because that is how the paper writes radii.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from robustlab.registry import did_you_mean

PRESET_DIR = Path(__file__).parent / "presets"
PAPER_EPS = 36 / 255  # the L2 radius the paper reports unless it says otherwise
DEFAULT_EPS = (PAPER_EPS, 72 / 255, 108 / 255, 1.0)  # radii certified by default
MAX_EPS = 1.0  # a larger radius is almost always a radius in 0-255 units (36 meant as 36/255)


class ConfigError(ValueError):
    """A configuration file or override that does not fit the schema."""


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric config key: ``low``/``high`` bounds, each closed unless ``*_open``.

    Every int or float key of the schema declares one (``tests/test_bad_input.py`` walks the
    schema), so a value out of range is refused before any training, naming the range. NaN and
    infinities are never in range.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __str__(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{left}{low}, {high}{right}"


# what torch.device accepts that this project runs on; checked before torch is imported
DEVICE_NAME = re.compile(r"(auto|cpu|mps|(cuda|xpu)(:\d+)?)")


def check_device_name(name: str, where: str = "device") -> str:
    """``name`` if it is a device robustlab can run on (auto, cpu, cuda, cuda:1, mps, ...), else
    a one-line ConfigError: every command validates its device here, before any work."""
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise ConfigError(f"{where}: '{name}' is not a device; use auto, cpu, cuda, cuda:N (the N-th GPU) or mps")
    return name


def ranged(default: Any, **bounds: Any) -> Any:
    """A dataclass field whose value must lie in ``Range(**bounds)`` (metadata ``range``; None passes)."""
    return field(default=default, metadata={"range": Range(**bounds)})


NON_NEGATIVE = {"low": 0}
POSITIVE = {"low": 0, "low_open": True}
COUNT = {"low": 1}  # a size or number of steps: 1 or more


@dataclass
class DataConfig:
    name: str = "digits"  # a dataset registry name, or a path to an .npz file
    data_dir: str | None = None  # folder with the official files; $ROBUSTLAB_DATA by default
    download: bool = False  # allow fetching official files (checksum-verified)
    val_size: int = ranged(0, **NON_NEGATIVE)  # >0: hold out this many training images (seeded) and evaluate on them
    split_seed: int = ranged(1111, low=0, high=2**32 - 1)  # the reference code's validation-split seed
    split: Literal["stratified", "reference"] = "stratified"  # how val_size images are drawn (docs/data.md)
    subset_size: int | None = ranged(None, **COUNT)  # class-balanced training subset of this size
    subset_seed: int = ranged(0, low=0, high=2**32 - 1)
    extra_path: str | None = None  # generated data (.npz with image/label) added to training
    extra_size: int = ranged(0, low=-1)  # how many extra images to add (0: none, -1: all)
    pca_components: str | None = None  # e.g. "0-15,512-3071": keep these principal components

    def __post_init__(self) -> None:
        # Registry names are case-insensitive; one spelling keeps runs of MNIST and mnist one set.
        if not self.name.endswith(".npz") and "/" not in self.name:
            self.name = self.name.lower()


@dataclass
class AugmentConfig:
    crop_padding: int = ranged(4, **NON_NEGATIVE)  # random crop with reflect padding; 0 turns it off
    flip: bool = True  # random horizontal flip
    cutout: int = ranged(8, **NON_NEGATIVE)  # side of one square cutout; 0 turns it off
    noise_std: float = ranged(0.0, **NON_NEGATIVE)  # Gaussian noise added after augmentation (smoothing base nets)
    per_batch: bool = False  # one random draw per batch (reference code) instead of per sample


@dataclass
class ModelConfig:
    name: str = "lipconvnet-aol"  # a model registry name
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments

    def __post_init__(self) -> None:
        self.name = self.name.lower()  # registry names are case-insensitive: store one spelling


@dataclass
class LossConfig:
    name: Literal["offset_ce", "ce", "emma"] = "offset_ce"
    offset: float = ranged(
        math.sqrt(2) * PAPER_EPS, **NON_NEGATIVE
    )  # OffsetCrossEntropy's u: a margin for radius PAPER_EPS
    temperature: float = ranged(0.25, **POSITIVE)  # T: loss = T * CE((z - u*onehot) / T)
    eps: float = ranged(PAPER_EPS, **POSITIVE)  # emma: the radius it trains for


@dataclass
class OptimConfig:
    name: Literal["sgd"] = "sgd"
    lr: float = ranged(0.1, **POSITIVE)  # peak learning rate of the schedule
    momentum: float = ranged(0.9, low=0, high=1, high_open=True)
    nesterov: bool = True
    weight_decay: float = ranged(0.0, **NON_NEGATIVE)
    schedule: Literal["onecycle", "constant"] = "onecycle"
    cycle_momentum: bool = False  # onecycle: momentum 0.95 -> 0.85 -> 0.95 against the lr (torch's default)
    grad_clip: float | None = ranged(None, **POSITIVE)  # clip the gradient norm to this (LiResNet)


@dataclass
class TrainConfig:
    epochs: float = ranged(24, **POSITIVE)  # for the full training set; see scale_epochs
    batch_size: int = ranged(256, **COUNT)
    scale_epochs: bool = True  # subsets train for epochs * full_size / N (the same images processed)
    eval_every: int = ranged(0, **NON_NEGATIVE)  # evaluate every K epochs (0: only at the end)
    checkpoint_every: int = ranged(1, **COUNT)  # write the resumable checkpoint every K epochs
    device: str = field(default="auto", metadata={"check": check_device_name})  # auto, cpu, cuda, cuda:1, ...
    precision: Literal["float32", "bfloat16"] = "float32"  # training only; certification is float32+
    compile: bool = False  # torch.compile the model for training
    channels_last: bool = False
    cuda_graph: bool = False  # CUDA: replay each step's forward and backward from a captured graph
    # mirror the metrics to tensorboard and/or wandb (offline); metrics.jsonl stays the record
    log_to: list[Literal["tensorboard", "wandb"]] = field(default_factory=list)


# TrainConfig flags that change which kernels run, not the arithmetic (precision does change it)
SPEED_OPTIONS = ("channels_last", "compile", "cuda_graph")


@dataclass
class EvalConfig:
    # radii in the [0, 1] pixel scale: 36/255, not 36
    eps: list[float] = field(default_factory=lambda: list(DEFAULT_EPS), metadata={"range": Range(0, MAX_EPS)})
    batch_size: int = ranged(1000, **COUNT)
    power_iterations: int = ranged(1000, **COUNT)  # CPL evaluation: power-iteration steps to convergence
    train_set: bool = False  # also certify the training images (no augmentation) after training
    smoothing_samples: int = ranged(0, **NON_NEGATIVE)  # >0: also the smoothing estimate with this many noisy copies


@dataclass
class ExperimentConfig:
    name: str = "run"
    seed: int = ranged(0, low=0, high=2**32 - 1)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------
# Building a config from plain data


def _printable(text: str) -> str:
    """``text`` as an error shows it: quoted and escaped when it holds a newline or another control character."""
    return text if text.isprintable() else repr(text)


def from_dict(data: dict[str, Any], cls: type = ExperimentConfig, where: str = "") -> Any:
    """Build the dataclass ``cls`` from nested plain data, checking every key and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key {_printable(_join(where, str(unknown[0])))}{did_you_mean(str(unknown[0]), known)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(sorted(known))}"
        )
    values = {name: _coerce(value, hints[name], _join(where, name)) for name, value in data.items()}
    for f in dataclasses.fields(cls):
        if f.name in values and "range" in f.metadata:
            _check_range(values[f.name], f.metadata["range"], _join(where, f.name))
        if f.name in values and "check" in f.metadata:
            f.metadata["check"](values[f.name], _join(where, f.name))
    return cls(**values)


def check_ranges(config: Any, where: str = "") -> None:
    """Raise a ConfigError for the first number of ``config`` (a config dataclass) outside its range.

    ``from_dict`` checks every value it reads; this also covers a config built or changed in Python.
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, _join(where, f.name))
        elif "range" in f.metadata:
            _check_range(value, f.metadata["range"], _join(where, f.name))
        elif "check" in f.metadata:
            f.metadata["check"](value, _join(where, f.name))


def _check_range(value: Any, valid: Range, where: str) -> None:
    for number in value if isinstance(value, list) else [value]:
        if number is not None and number not in valid:
            hint = "; radii are in the [0, 1] pixel scale: write 36/255, not 36" if where == "eval.eps" else ""
            raise ConfigError(f"{where}: {number!r} is out of range; valid values: {valid}{hint}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(value if value is not None else {}, hint, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(
                f"{where}: '{value}' is not a valid choice; choose one of: {', '.join(map(str, choices))}"
            )
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        return parse_float(value, where)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {hint}")


def parse_float(value: Any, where: str = "value") -> float:
    """A number from YAML or the command line; fractions such as ``36/255`` are allowed."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace("sqrt2", str(math.sqrt(2)))
        try:
            if "/" in text:
                num, den = text.split("/")
                return float(num) / float(den)
            return float(text)
        except (ValueError, ZeroDivisionError):
            pass
    raise ConfigError(f"{where}: expected a number such as 0.5 or 36/255, got {value!r}")


# ---------------------------------------------------------------------------------------
# Presets, files and overrides


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


# libyaml's safe loader where PyYAML has it: the same documents, read ~10x faster (the run
# store's reindex reads one config.yaml per run)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file of config keys, or a one-line ConfigError naming the file."""
    try:
        data = yaml.load(path.read_text(), Loader=SAFE_LOADER)
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())  # the parser's message spans lines
        raise ConfigError(f"{path}: not valid YAML ({reason})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read it as a YAML text file ({error})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of config sections (such as 'optim: {{lr: 0.1}}'), "
            f"got a {type(data).__name__}"
        )
    return data


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "kwargs":
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_raw(source: str | Path) -> dict[str, Any]:
    """Raw mapping of a preset name or YAML file; ``base: PRESET`` inherits from another."""
    path = Path(source)
    if not path.suffix and not path.exists():
        path = PRESET_DIR / f"{source}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown preset '{source}'{did_you_mean(str(source), preset_names())}; presets: "
                f"{', '.join(preset_names())} (or give the path of a YAML file)"
            )
    elif not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    data = read_yaml(path)
    base = data.pop("base", None)
    return _deep_merge(_load_raw(base), data) if base else data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=0.3`` -> (["optim", "lr"], 0.3); values are read as YAML scalars."""
    key, sep, raw = text.partition("=")
    shown = f"'{text}'" if text.isprintable() else repr(text)  # a newline in it must not break the error's line
    if not sep or not key.strip():
        raise ConfigError(f"override {shown} must look like key=value, e.g. optim.lr=0.3")
    try:
        return key.strip().split("."), yaml.load(raw, Loader=SAFE_LOADER) if raw.strip() else None
    except yaml.YAMLError as error:
        reason = " ".join(str(error).split())  # the parser's message spans lines
        raise ConfigError(f"override {shown}: the value is not valid YAML ({reason}); quote text values") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        node[path[-1]] = value
    return data


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Config from a preset name or YAML path (or the defaults), then ``key=value`` overrides."""
    data = _load_raw(source) if source else {}
    return from_dict(apply_overrides(data, overrides or []))


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> ExperimentConfig:
    return from_dict(apply_overrides(data, overrides or []))
