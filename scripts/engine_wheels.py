"""The pinned engine wheels as data: fetch one from the package index, unpack it, and import parts of
it on a CPU-only machine.

``fetch(name, version)`` runs ``pip download --no-deps`` into ``.cache/engines/``, unpacks the wheel
next to it and records where it came from (``SOURCE.json``: version, file name, sha256, the pip
command). ``stubbed_import(root, module)`` imports one module of the unpacked wheel with every
package this interpreter lacks (torch, triton, CUDA kernels …) replaced by an inert stand-in, so a
checker can read the engine's own argparse parser, pydantic models and metric names without the
engine's runtime. Stand-ins are only handed out while the import runs, and never for the wheel's
own package.

Used by ``scripts/gen_option_tables.py`` (``make reference``) and by the tests' SGLang oracle.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "engines"
SOURCE_FILE = "SOURCE.json"


class FetchError(RuntimeError):
    """The wheel could not be downloaded (no registry reachable) or unpacked."""


def unpacked_dir(name: str, version: str, cache: Path = CACHE) -> Path:
    return cache / f"{name}-{version}"


def fetch(name: str, version: str, cache: Path = CACHE) -> Path:
    """The unpacked wheel of ``name==version`` under ``cache`` (downloaded once; reused while its
    ``SOURCE.json`` names the same version)."""
    dest = unpacked_dir(name, version, cache)
    source = dest / SOURCE_FILE
    if source.is_file() and json.loads(source.read_text()).get("version") == version:
        return dest
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
    cmd.append(f"{name}=={version}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise FetchError(
            f"could not download {name}=={version} with `{' '.join(cmd[2:])}` (is a package index reachable?):\n"
            + "\n".join(tail)
        )
    stem = name.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise FetchError(f"pip reported success but no {stem}-{version}-*.whl is in {wheels}")
    wheel = found[-1]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        subprocess.run(["rm", "-rf", str(tmp)], check=True)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp)
    record = {
        "name": name,
        "version": version,
        "file": wheel.name,
        "sha256": digest,
        "fetched_with": f"pip download --no-deps --only-binary=:all: {name}=={version}",
    }
    (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if dest.exists():
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    tmp.rename(dest)
    return dest


def source_record(root: Path) -> dict[str, Any]:
    """What ``fetch`` recorded about the unpacked wheel at ``root`` (empty if it was unpacked by hand)."""
    f = root / SOURCE_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


_ABSENT = object()
# What a CPU-only machine without the accelerator stacks looks like to code probing for them:
# ``hasattr(torch, "npu")`` is false, ``torch.version.hip`` is None, every ``is_available()`` is falsy.
_STUB_FACTS: dict[str, dict[str, Any]] = {
    "torch": {"npu": _ABSENT},
    "torch.version": {"hip": None, "cuda": None, "musa": None, "git_version": "0"},
}


_STUBBED_SUBMODULES: set[str] = set()


class _Stub(types.ModuleType):
    """A module whose every attribute is another stand-in: callable, subclassable, indexable."""

    __version__ = "0.0.0"

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        fact = _STUB_FACTS.get(self.__name__, {}).get(attr)
        if fact is _ABSENT:
            raise AttributeError(attr)
        if attr in _STUB_FACTS.get(self.__name__, {}):
            return fact
        sub = f"{self.__name__}.{attr}"
        if sub in _STUB_FACTS:
            _STUBBED_SUBMODULES.add(sub)
            return sys.modules.setdefault(sub, _Stub(sub))
        return _Anything(f"{self.__name__}.{attr}")


class _AnythingMeta(abc.ABCMeta):
    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Anything(f"{cls.__name__}.{attr}")

    def __getitem__(cls, item: Any) -> Any:
        return cls

    def __or__(cls, other: Any) -> Any:
        return cls

    def __ror__(cls, other: Any) -> Any:
        return cls


def _is_stub(obj: Any) -> bool:
    # Stand-ins are all alike (e.g. two stubbed ``torch.library.infer_schema(f)`` results compare equal).
    return isinstance(obj, _AnythingMeta) or isinstance(type(obj), _AnythingMeta)


def _same(self: Any, *other: Any) -> Any:
    return self


_OPERATORS = ["neg", "pos", "abs", "add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv"]
_OPERATORS += ["floordiv", "rfloordiv", "mod", "pow", "and", "rand", "lt", "le", "gt", "ge"]
_CONVERSIONS = {"__int__": lambda self: 0, "__index__": lambda self: 0, "__float__": lambda self: 0.0}
_CONVERSIONS.update({"__len__": lambda self: 0, "__eq__": lambda self, o: _is_stub(o)})
_CONVERSIONS["__hash__"] = lambda self: id(self)  # noqa: PLW0108 - a builtin is no method: it would not get self
for _op in _OPERATORS:
    setattr(_AnythingMeta, f"__{_op}__", _same)
for _k, _v in _CONVERSIONS.items():
    setattr(_AnythingMeta, _k, _v)


def _any_schema(cls: Any, source: Any, handler: Any) -> Any:
    # A stand-in used as a pydantic field type accepts anything.
    from pydantic_core import core_schema

    return core_schema.any_schema()


def _Anything(name: str) -> Any:
    """A fresh class standing in for any object of a missing package (a class so it can be a base)."""

    def __init__(self: Any, *a: Any, **k: Any) -> None:
        pass

    def __call__(self: Any, *a: Any, **k: Any) -> Any:
        return self

    def __iter__(self: Any) -> Iterator[Any]:
        return iter(())

    def __bool__(self: Any) -> bool:
        return False

    def __getattr__(self: Any, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _Anything(f"{name}.{attr}")

    ns = {"__init__": __init__, "__call__": __call__, "__iter__": __iter__, "__bool__": __bool__}
    ns["__getattr__"] = __getattr__
    ns.update({f"__{op}__": _same for op in _OPERATORS})
    ns.update({"__or__": _same, "__ror__": _same, "__getitem__": _same, **_CONVERSIONS})
    ns["__get_pydantic_core_schema__"] = classmethod(_any_schema)
    return _AnythingMeta(name.rsplit(".", 1)[-1], (), ns)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Hands out a stand-in module for any top-level package that no other finder can provide."""

    def __init__(self, root: Path, own: str) -> None:
        self.root = str(root)
        self.own = own
        self.stubbed: set[str] = set()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        # Last on sys.meta_path: asked only when no real finder has the module. Only the wheel's own
        # code gets stand-ins; an installed library probing for an optional package (``try: import
        # chardet``) still sees it missing.
        if fullname.split(".", 1)[0] == self.own or not self._asked_by_wheel():
            return None
        self.stubbed.add(fullname)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def _asked_by_wheel(self) -> bool:
        frame = sys._getframe(1)
        while frame is not None:
            filename = frame.f_code.co_filename
            if not filename.startswith("<frozen importlib") and filename not in (__file__, importlib.__file__):
                return filename.startswith(self.root)
            frame = frame.f_back  # type: ignore[assignment]
        return False

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        mod = _Stub(spec.name)
        mod.__path__ = []
        return mod

    def exec_module(self, module: types.ModuleType) -> None:
        return None


@contextlib.contextmanager
def stubbed_import_context(root: Path, package: str, skip_init: bool = True) -> Iterator[_StubFinder]:
    """``root`` on ``sys.path`` first and missing packages stubbed, for the duration of the block."""
    root = root.resolve()
    finder = _StubFinder(root, package)
    if skip_init and package not in sys.modules:
        # The package's own __init__ is its public API (and imports the whole runtime): skip it,
        # so that only the modules asked for, and what they import, run.
        bare = types.ModuleType(package)
        bare.__path__ = [str(root / package)]
        bare.__file__ = str(root / package / "__init__.py")
        sys.modules[package] = bare
    sys.path.insert(0, str(root))
    sys.meta_path.append(finder)
    try:
        yield finder
    finally:
        sys.meta_path.remove(finder)
        sys.path.remove(str(root))
        # The stand-ins stay referenced by the wheel's modules but leave sys.modules, so later code
        # probing for torch & co. in this process finds them missing, as they are.
        for name in finder.stubbed | _STUBBED_SUBMODULES:
            if isinstance(sys.modules.get(name), _Stub):
                del sys.modules[name]


def stubbed_import(root: Path, module: str, skip_init: bool = True) -> types.ModuleType:
    """Import ``module`` from the unpacked wheel at ``root`` with missing dependencies stubbed."""
    package = module.split(".", 1)[0]
    root = root.resolve()
    loaded = sys.modules.get(package)
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(root)):
        raise RuntimeError(f"a different {package} is already imported ({loaded.__file__})")
    with stubbed_import_context(root, package, skip_init):
        return importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    """``python scripts/engine_wheels.py NAME VERSION``: fetch and unpack once; print where."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: engine_wheels.py NAME VERSION", file=sys.stderr)
        return 2
    try:
        dest = fetch(args[0], args[1])
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    record = source_record(dest)
    print(f"{dest.relative_to(ROOT)}: {record.get('file')} sha256 {record.get('sha256')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
