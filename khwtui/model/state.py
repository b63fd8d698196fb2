"""The per-cluster state folder: state.toml, its subfolders, the run lock and the node logs.

state.toml holds what a resumed run needs to know (stage results, nodes, host keys, files placed,
cloud resource names) and never a secret. The dataclasses below are its schema: one generic
converter reads and writes them, so a field added here is stored without any other code.
Writes go through fsutil.write_atomic, so a crash at any instant leaves either the previous or
the new state on disk, never a torn one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import functools
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from khwtui.core.errors import StateError
from khwtui.core.events import CHECK_RESULTS, PENDING, STAGE_STATUSES, Status
from khwtui.core.fsutil import TEMP_SUFFIX, write_atomic

SCHEMA = 1
STATE_FILE = "state.toml"
LOCK_FILE = "lock"
PRIVATE_KEY_MARK = "PRIVATE KEY-----"
# Subfolders and their modes: secrets live in the 0700 ones.
LAYOUT = {"pki": 0o700, "ssh": 0o700, "kubeconfigs": 0o700, "rendered": 0o755, "logs": 0o755}
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
FIX_REBUILD = "correct it, or move state.toml aside and run `khwtui up` again (every stage checks before it applies)"
FIX_UPGRADE = "it was written by a newer khwtui: upgrade khwtui"


def _choices(default: Any, allowed: tuple[Any, ...]) -> Any:
    """A field whose value must be one of `allowed`; the converter enforces it on load and save."""
    return field(default=default, metadata={"choices": allowed})


@dataclass
class CheckRecord:
    check: str
    result: Status = field(metadata={"choices": CHECK_RESULTS})
    node: str = ""
    evidence: str = ""


@dataclass
class StageRecord:
    status: Status = field(default=PENDING, metadata={"choices": STAGE_STATUSES})
    detail: str = ""
    started: float | None = None
    finished: float | None = None
    checks: list[CheckRecord] = field(default_factory=list)


@dataclass
class FileRecord:
    path: str
    sha256: str
    mode: int
    owner: str = "root"
    group: str = "root"
    stage: str = ""


@dataclass
class NodeRecord:
    name: str
    role: str
    internal_ip: str = ""
    external_ip: str = ""
    ssh_host: str = ""
    ssh_port: int = 22
    host_key: str = ""  # "ssh-ed25519 AAAA...", pinned before the first command
    files: dict[str, FileRecord] = field(default_factory=dict)  # keyed by path
    units: list[str] = field(default_factory=list)
    restarts: dict[str, str] = field(default_factory=dict)  # unit -> stage: a change to its inputs made its restart due


@dataclass
class State:
    schema: int = _choices(SCHEMA, (SCHEMA,))
    cluster: str = ""
    provider: str = ""
    public_address: str = ""
    stages: dict[str, StageRecord] = field(default_factory=dict)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    resources: dict[str, dict[str, str]] = field(default_factory=dict)  # provider-owned facts
    renewals: dict[str, str] = field(default_factory=dict)  # certificate -> serial (hex) re-issued, rollout not finished

    def stage(self, name: str) -> StageRecord:
        """The record of stage `name`, created pending on first use."""
        return self.stages.setdefault(name, StageRecord())


def _from_schema_0(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 0 (the pre-release layout) stored each stage as a bare status string."""
    stages = raw.get("stages", {})
    if not isinstance(stages, dict):
        return raw  # the decoder reports it, by key path
    return {**raw, "stages": {name: {"status": status} for name, status in stages.items()}}


# MIGRATIONS[n] turns a schema-n table into a schema-(n+1) one; load applies them in order.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _from_schema_0}


def default_state_dir(cluster: str) -> Path:
    """The folder of `cluster` under the user's data dir (e.g. ~/.local/share/khwtui/<cluster>)."""
    return Path(platformdirs.user_data_dir("khwtui", appauthor=False)) / cluster


def _subfolder(name: str) -> property:
    """A read-only StateDir attribute for one LAYOUT subfolder."""

    def get(self: StateDir) -> Path:
        return self.path / name

    return property(get, doc=f"{name}/ (mode {LAYOUT[name]:o})")


class StateDir:
    """One cluster's state folder. Only one khwtui may use it at a time: hold `lock()` around a run."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def state_file(self) -> Path:
        return self._path / STATE_FILE

    pki_dir = _subfolder("pki")
    ssh_dir = _subfolder("ssh")
    kubeconfig_dir = _subfolder("kubeconfigs")
    rendered_dir = _subfolder("rendered")
    logs_dir = _subfolder("logs")

    def ensure_layout(self) -> None:
        """Create the folder and its subfolders with exact modes, whatever the umask or earlier modes."""
        _mkdir(self._path, 0o700)
        for name, mode in LAYOUT.items():
            _mkdir(self._path / name, mode)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's flock for the block; the kernel frees it even if the process is killed."""
        _mkdir(self._path, 0o700)
        fd = os.open(self._path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateError(
                    f"cluster state {self._path} is in use by another khwtui (pid {_holder(fd)}); wait for it or stop it"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def load(self) -> State:
        """The saved state, migrated to SCHEMA; a missing file is a fresh State()."""
        try:
            raw = tomllib.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return State()
        except ValueError as exc:  # TOMLDecodeError and UnicodeDecodeError
            raise StateError(f"{self.state_file} is not valid TOML ({exc}); fix: {FIX_REBUILD}") from None
        try:
            return _decode(_migrate(raw), State, "")
        except _Invalid as exc:
            raise StateError(f"{self.state_file}: {exc}; fix: {exc.fix}") from None

    def save(self, state: State) -> None:
        """Replace state.toml atomically. Refuses (ValueError) anything load would refuse, and private keys."""
        table = _encode(state)
        for key, text in _strings(table, ""):
            if PRIVATE_KEY_MARK in text:
                raise ValueError(f"refusing to save a private key in state.toml (at {key or 'top level'}); keep it in pki/ or ssh/")
        try:
            _decode(table, State, "")
        except _Invalid as exc:
            raise ValueError(f"refusing to save an invalid state: {exc}") from None
        self._remove_stale_temps()
        write_atomic(self.state_file, tomli_w.dumps(table).encode("utf-8"), 0o600, crash_point="state.save")

    def append_log(self, node: str, lines: Iterable[str]) -> None:
        """Append lines to logs/<node>.log ("khwtui.log" for the operator's machine): the full log on disk."""
        name = node or "khwtui"
        if not BARE_KEY.match(name):
            raise ValueError(f"log name {name!r} is not a node name")
        text = "".join(f"{line}\n" for line in lines)
        if not text:
            return
        fd = os.open(self.logs_dir / f"{name}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, text.encode("utf-8", "backslashreplace"))
        finally:
            os.close(fd)

    def _remove_stale_temps(self) -> None:
        """Temp files left by a save that was killed before its rename; nothing else writes them."""
        for temp in self._path.glob(f".{STATE_FILE}.*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def _mkdir(path: Path, mode: int) -> None:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    path.chmod(mode)


def _holder(fd: int) -> str:
    """The PID the lock holder wrote, or "unknown" if it has not written it yet."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    version = raw.get("schema")
    if type(version) is not int:
        raise _Invalid("schema", f"missing or not an integer ({version!r})", FIX_REBUILD)
    if version > SCHEMA:
        raise _Invalid("schema", f"written by a newer khwtui (schema {version}; this one reads up to {SCHEMA})", "upgrade khwtui")
    while version < SCHEMA:
        step = MIGRATIONS.get(version)
        if step is None:
            raise _Invalid("schema", f"schema {version} is not a khwtui state schema", FIX_REBUILD)
        raw = step(raw)
        version += 1
        raw["schema"] = version
    return raw


class _Invalid(ValueError):
    """A value in the state table that does not fit the schema: where, what, and the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"{key}: {problem}")


def _encode(value: Any) -> Any:
    """Dataclasses to TOML tables; None (which TOML lacks) is left out and restored as the default on load.
    An enum member is stored as its plain value."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any, hint: Any, key: str) -> Any:
    """A TOML value to the type `hint` names, strictly: wrong types and unknown keys are _Invalid."""
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_record(value, hint, key)
    if origin in (types.UnionType, typing.Union):  # `T | None`: None never reaches here, it is omitted
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _decode(value, inner, key)
    if origin is dict:
        _, inner = typing.get_args(hint)
        return {k: _decode(v, inner, _join(key, k)) for k, v in _expect(value, dict, key).items()}
    if origin is list:
        (inner,) = typing.get_args(hint)
        return [_decode(v, inner, f"{key}[{i}]") for i, v in enumerate(_expect(value, list, key))]
    if isinstance(hint, enum.EnumType):
        word = _expect(value, str, key)
        try:
            return hint(word)
        except ValueError:
            return word  # the field's choices refuse it, naming the words that field allows (a check, fewer than a stage)
    if hint is float and type(value) is int:
        return float(value)
    return _expect(value, hint, key)


def _decode_record(value: Any, cls: type, key: str) -> Any:
    table = _expect(value, dict, key)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise _Invalid(_join(key, unknown[0]), "unknown key", FIX_UPGRADE)
    values = {}
    for name, f in fields.items():
        sub = _join(key, name)
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Invalid(sub, "missing", FIX_REBUILD)
            continue
        values[name] = _decode(table[name], _hints(cls)[name], sub)
        allowed = f.metadata.get("choices")
        if allowed is not None and values[name] not in allowed:
            raise _Invalid(sub, f"{_short(table[name])} is not one of {', '.join(map(str, allowed))}", FIX_REBUILD)
    return cls(**values)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _expect(value: Any, cls: type, key: str) -> Any:
    if type(value) is not cls:  # exact: a bool is not an int here
        raise _Invalid(key or "state", f"expected {cls.__name__}, found {type(value).__name__} {_short(value)}", FIX_REBUILD)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _join(key: str, name: str) -> str:
    """A dotted key path as TOML would spell it (quoted where a part is not a bare key)."""
    part = name if BARE_KEY.match(name) else json.dumps(name)
    return f"{key}.{part}" if key else part


def _strings(value: Any, key: str) -> Iterator[tuple[str, str]]:
    """Every string in an encoded table, keys included, with its key path."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield key, k  # the table's path: a key's own text never goes into a message
            yield from _strings(v, _join(key, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}[{i}]")
