"""Configuration dataclasses: validation on construction, JSON round-trip, a type registry.

Every configuration in causalvl (interventions, training, diagnostics, reports) is a
keyword-only dataclass deriving from :class:`Config`. Validation runs in ``__post_init__``
and raises :class:`~causalvl.errors.ConfigError` naming the field, the bad value and what is
allowed. ``to_dict``/``from_dict`` round-trip through JSON; unknown keys warn and are dropped
(so configs written by a newer causalvl still load), missing required keys raise.

Intervention configs additionally carry a registry key (``type``) so a list of them can be
saved and restored without pickle::

    >>> from causalvl import IdentityConfig
    >>> cfg = IdentityConfig()
    >>> InterventionConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import json
import math
import os
import tempfile
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ._version import __version__
from .errors import ConfigError, warn_at_caller

C = TypeVar("C", bound="Config")


@contextlib.contextmanager
def atomic_destination(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    Whatever is written to the temporary path appears at ``path`` all at once or not at all:
    on an exception the temporary file is removed and ``path`` keeps its previous content.
    The file gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # after the write: writers that replace the file (safetensors) create it 0600 again
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder + rename)."""
    with atomic_destination(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class JSONSerializable:
    """``to_json`` / ``from_json`` on top of a class's ``to_dict`` / ``from_dict``.

    ``json_error`` is the exception raised for a missing file or invalid JSON."""

    json_error: ClassVar[type[Exception]] = ConfigError

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialise to JSON; with ``path``, also write it atomically."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)  # type: ignore[attr-defined]
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> Any:
        """Load from a JSON string or a path to a JSON file."""
        return cls.from_dict(read_json(cls.__name__, text_or_path, cls.json_error))  # type: ignore[attr-defined]


def read_json(
    owner: str, text_or_path: str | os.PathLike, error: type[Exception] = ConfigError
) -> Any:
    """Parse a JSON string, or the JSON file at a path; ``error`` names ``owner`` on failure."""
    text = str(text_or_path)
    if not text.lstrip().startswith(("{", "[")):
        path = Path(text_or_path)
        try:
            if not path.is_file():
                raise error(f"{owner}.from_json: no such file {str(path)[:300]!r}.")
            text = path.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:  # a name too long, not UTF-8, ...
            raise error(f"{owner}.from_json: cannot read {str(path)[:300]!r} ({exc}).") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{owner}.from_json: invalid JSON ({exc}).") from exc
    except RecursionError as exc:
        raise error(f"{owner}.from_json: the JSON is nested too deeply.") from exc
    except ValueError as exc:  # an integer longer than Python converts
        raise error(f"{owner}.from_json: invalid JSON value ({str(exc)[:200]}).") from exc


class _ConfigMeta(type):
    """Maps renamed keyword arguments to their new field names (with a ``FutureWarning``)
    before the dataclass ``__init__`` sees them, so the old spelling keeps working for one
    release in the constructor, :meth:`Config.replace` and :meth:`Config.from_dict`."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs and cls.renamed_fields:
            kwargs = cls._translate_renamed(kwargs, f"{cls.__name__}(...)")  # type: ignore[attr-defined]
        return super().__call__(*args, **kwargs)

    @property
    def __signature__(cls) -> inspect.Signature:
        # the dataclass __init__'s keyword-only fields, not this __call__'s (*args, **kwargs)
        if not dataclasses.is_dataclass(cls):
            return inspect.Signature()
        sig = inspect.signature(cls.__init__)  # type: ignore[misc]
        return sig.replace(parameters=list(sig.parameters.values())[1:])

    @property
    def renamed_fields(cls) -> dict[str, str]:
        """Old field name -> new field name, over the class and its bases."""
        out: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            out.update(klass.__dict__.get("_renamed", {}))
        return out


class Config(JSONSerializable, metaclass=_ConfigMeta):
    """Base class of every causalvl configuration dataclass.

    Subclasses are declared with ``@dataclass(kw_only=True)`` and put their checks in
    :meth:`validate`, using the ``_check_*`` helpers so that messages are uniform. A value
    that validation normalises (a list made a tuple, a default resolved) is written with
    :meth:`_normalise`.

    Once validated a config is frozen: assigning a field raises :class:`ConfigError`; use
    :meth:`replace` for a changed copy. Configs compare and hash by their fields. A renamed
    field is listed in the class attribute ``_renamed`` (``{"old": "new"}``); the old name is
    accepted, with a ``FutureWarning``, by the constructor, :meth:`replace` and
    :meth:`from_dict`.
    """

    _renamed: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # an explicit __hash__ in the class body keeps @dataclass (eq=True) from removing it
        if "__hash__" not in cls.__dict__:
            cls.__hash__ = Config.__hash__  # type: ignore[method-assign]

    def __post_init__(self) -> None:
        self._check_literals()
        self._check_init_seed()
        self.validate()
        object.__setattr__(self, "_frozen", True)

    # -- immutability -------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_frozen", False):
            raise ConfigError(
                f"{type(self).__name__} is frozen; use cfg.replace({name}=...) for a copy with "
                f"{name} changed."
            )
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: a renamed field read by its old name
        new = type(self).renamed_fields.get(name) if not name.startswith("__") else None
        if new is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        warn_at_caller(
            f"{type(self).__name__}.{name} is renamed to {new}; the old name is accepted for "
            f"one release. Read cfg.{new} instead."
        )
        return getattr(self, new)

    def __delattr__(self, name: str) -> None:
        if self.__dict__.get("_frozen", False):
            raise ConfigError(f"{type(self).__name__} is frozen; fields cannot be deleted.")
        object.__delattr__(self, name)

    def __hash__(self) -> int:
        values = tuple(
            _hashable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.compare
        )
        return hash((type(self).__qualname__, values))

    def _normalise(self, name: str, value: Any) -> None:
        """Write the normalised ``value`` of field ``name`` during :meth:`validate`."""
        if self.__dict__.get("_frozen", False):
            raise ConfigError(
                f"{type(self).__name__} is frozen; _normalise is for validate() only."
            )
        object.__setattr__(self, name, value)

    @classmethod
    def _translate_renamed(cls, data: Mapping[str, Any], where: str) -> dict[str, Any]:
        """``data`` with renamed keys mapped to the new names (a ``FutureWarning`` each)."""
        renamed = cls.renamed_fields  # type: ignore[attr-defined]
        out = dict(data)
        for old, new in renamed.items():
            if old not in out:
                continue
            if new in out:
                raise ConfigError(
                    f"{where}: got both {old!r} (renamed) and {new!r}; pass only {new!r}."
                )
            warn_at_caller(
                f"{cls.__name__}.{old} is renamed to {new}; the old name is accepted for one "
                f"release. Write {new}=... instead."
            )
            out[new] = out.pop(old)
        return out

    # -- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """Check field values; subclasses extend this. Raises :class:`ConfigError`."""

    def _check_literals(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            allowed = _literal_values(hints.get(f.name))
            if allowed is not None:
                value = getattr(self, f.name)
                if value not in allowed:
                    raise ConfigError(
                        f"{type(self).__name__}.{f.name} = {value!r} is not allowed; "
                        f"choose one of {', '.join(repr(a) for a in allowed)}."
                    )

    def _check_init_seed(self) -> None:
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        if "init_seed" in names and self.init_seed is not None:  # type: ignore[attr-defined]
            self._check_int("init_seed", minimum=0)

    def _fail(self, name: str, requirement: str) -> None:
        raise ConfigError(
            f"{type(self).__name__}.{name} = {getattr(self, name)!r} is invalid: {requirement}."
        )

    def _check_positive(self, *names: str, allow_zero: bool = False) -> None:
        for name in names:
            value = getattr(self, name)
            bad = not isinstance(value, (int, float)) or isinstance(value, bool)
            bad = bad or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero)
            if bad:
                self._fail(name, "must be a finite number " + (">= 0" if allow_zero else "> 0"))

    def _check_int(self, *names: str, minimum: int = 1) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                self._fail(name, f"must be an integer >= {minimum}")

    def _check_fraction(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not 0 <= value <= 1
            ):
                self._fail(name, "must be a number in [0, 1]")

    def _check_subset(self, name: str, allowed: Iterable[str]) -> None:
        """``None`` or a non-empty tuple of names drawn from ``allowed``."""
        value = getattr(self, name)
        if value is None:
            return
        allowed = list(allowed)
        if isinstance(value, str) or not value or any(v not in allowed for v in value):
            self._fail(name, f"must be a non-empty subset of {allowed}")

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (tuples become lists).

        Fields declared with ``metadata={"json": False}`` (runtime objects such as tensors
        handed over at construction, which are saved elsewhere) are left out."""
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata.get("json", True)
        }

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from a dict; unknown keys warn and are dropped, missing required keys raise."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{cls.__name__}.from_dict expects a mapping, got {type(data).__name__}."
            )
        data = {k: v for k, v in data.items() if k not in ("type", "causalvl_version")}
        data = cls._translate_renamed(data, f"{cls.__name__}.from_dict")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            warn_at_caller(
                f"{cls.__name__}: ignoring unknown keys {unknown} (written by another causalvl "
                f"version?). Known keys: {sorted(names)}.",
                UserWarning,
            )
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.init
            and f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"{cls.__name__}: missing required keys {missing}.")
        hints = typing.get_type_hints(cls)
        kwargs = {k: _from_json(v, hints.get(k)) for k, v in data.items() if k in names}
        return cls(**kwargs)

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some fields changed (configs are frozen: this is how to
        change one)."""
        changes = type(self)._translate_renamed(changes, f"{type(self).__name__}.replace")
        return dataclasses.replace(self, **changes)


#: built-in intervention type key -> ``"module:Class"`` of its config, imported on first lookup
#: (reading a config imports only the module that defines it; see :func:`intervention_config_class`)
BUILTIN_INTERVENTION_CONFIGS: dict[str, str] = {
    "identity": "causalvl.interventions.identity.config:IdentityConfig",
    "cfvqa": "causalvl.interventions.cfvqa.config:CFVQAConfig",
    "prior_subtraction": "causalvl.interventions.prior_subtraction.config:PriorSubtractionConfig",
    "rubi": "causalvl.interventions.rubi.config:RUBiConfig",
    "lmh": "causalvl.interventions.lmh.config:LMHConfig",
    "bias_product": "causalvl.interventions.lmh.config:BiasProductConfig",
    "gge": "causalvl.interventions.gge.config:GGEConfig",
    "reweight": "causalvl.interventions.reweight.config:ReweightConfig",
    "group_dro": "causalvl.interventions.group_dro.config:GroupDROConfig",
    "backdoor": "causalvl.interventions.backdoor.config:BackdoorConfig",
    "catt": "causalvl.interventions.catt.config:CATTConfig",
    "counterfactual_decoding": "causalvl.decoding.config:CounterfactualDecodingConfig",
}

#: type key -> config class of every intervention config defined so far (built-in or user)
_INTERVENTIONS: dict[str, type[InterventionConfig]] = {}


@dataclasses.dataclass(kw_only=True)
class InterventionConfig(Config):
    """Base of intervention configs. Subclasses set the class attribute ``type``.

    Defining a subclass registers its ``type`` key, so :meth:`from_dict` can rebuild it from
    JSON; the built-in types are listed in :data:`BUILTIN_INTERVENTION_CONFIGS` and imported
    on first use. The matching :class:`~causalvl.interventions.base.Intervention`
    implementation is looked up when :func:`causalvl.intervene` builds the wrapper.

    ``init_seed``: with an integer, the intervention draws its initial parameters from a
    private generator seeded with it (the global RNG is neither used nor changed), so the
    same config gives the same initial weights whatever ran before; ``None`` draws them from
    the global RNG. Interventions without parameters ignore it.
    """

    type: ClassVar[str] = ""
    # keyword-only, so a subclass declared without kw_only may still have required fields
    init_seed: int | None = dataclasses.field(default=None, kw_only=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        key = cls.__dict__.get("type")
        if key:
            if key in _INTERVENTIONS and _INTERVENTIONS[key].__qualname__ != cls.__qualname__:
                raise ConfigError(f"intervention type {key!r} is registered twice.")
            _INTERVENTIONS[key] = cls

    def unallocated_fields(self) -> frozenset[str]:
        """Size fields this config leaves unused (no parameter is built from them), e.g. the
        question-branch widths of a GGE without a question branch. :func:`causalvl.load` does
        not look for their values among the saved tensors' shapes."""
        return frozenset()

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "causalvl_version": __version__, **super().to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InterventionConfig:  # type: ignore[override]
        if cls is InterventionConfig or cls.type == "":
            if not isinstance(data, Mapping) or "type" not in data:
                raise ConfigError(
                    "intervention config dict has no 'type' key; known types: "
                    f"{intervention_types()}."
                )
            return intervention_config_class(data["type"]).from_dict(data)
        if isinstance(data, Mapping) and data.get("type", cls.type) != cls.type:
            raise ConfigError(f"{cls.__name__}.from_dict got a config of type {data['type']!r}.")
        return super().from_dict.__func__(cls, data)  # type: ignore[attr-defined]


def intervention_types() -> list[str]:
    """Every known intervention type key (built-in and defined so far), sorted; imports
    nothing."""
    return sorted(set(BUILTIN_INTERVENTION_CONFIGS) | set(_INTERVENTIONS))


def intervention_config_class(key: Any) -> type[InterventionConfig]:
    """The config class of intervention type ``key``; a built-in type's module is imported
    on first use (only that module).

    Raises:
        ConfigError: ``key`` is not a known type (the message lists the known ones).
    """
    if isinstance(key, str) and key not in _INTERVENTIONS and key in BUILTIN_INTERVENTION_CONFIGS:
        module, _, name = BUILTIN_INTERVENTION_CONFIGS[key].partition(":")
        getattr(importlib.import_module(module), name)  # defining the class registers it
    if not isinstance(key, str) or key not in _INTERVENTIONS:
        raise ConfigError(
            f"unknown intervention type {key!r}; known types: {intervention_types()}."
        )
    return _INTERVENTIONS[key]


def registered_intervention_types() -> dict[str, type[InterventionConfig]]:
    """Deprecated: use :func:`intervention_config_class` (one type) or :func:`intervention_types`.

    The registry key -> config class mapping (a copy), with every built-in type imported."""
    warn_at_caller(
        "causalvl.config.registered_intervention_types() is deprecated; use "
        "causalvl.config.intervention_config_class(key) or intervention_types()."
    )
    return {key: intervention_config_class(key) for key in intervention_types()}


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, (set, frozenset)):
        return frozenset(_hashable(v) for v in value)
    return value


def _literal_values(hint: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ConfigError(
        f"config value {value!r} of type {type(value).__name__} cannot be written to JSON; "
        "use numbers, strings, lists or dicts (tensors belong in the weights file)."
    )


def _from_json(value: Any, hint: Any) -> Any:
    """Undo list-for-tuple conversion where the field is annotated as a tuple."""
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(hint):
            if typing.get_origin(arg) is tuple and isinstance(value, list):
                return tuple(value)
    if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, Mapping):
        return hint.from_dict(value)
    return value


def as_config_list(
    configs: InterventionConfig | Iterable[InterventionConfig],
) -> list[InterventionConfig]:
    """Normalise one config or an iterable of configs to a validated list."""
    if isinstance(configs, InterventionConfig):
        return [configs]
    if isinstance(configs, (str, bytes, Mapping)) or not isinstance(configs, Iterable):
        raise ConfigError(
            f"expected an InterventionConfig or a list of them, got {type(configs).__name__}; "
            "e.g. causalvl.intervene(model, causalvl.IdentityConfig())."
        )
    out = list(configs)
    for c in out:
        if not isinstance(c, InterventionConfig):
            raise ConfigError(
                f"expected InterventionConfig instances, got {type(c).__name__} in the list."
            )
    if not out:
        raise ConfigError("empty list of intervention configs; pass at least one config.")
    return out
