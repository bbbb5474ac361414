"""Load a TARGET: the Python file or module that says which stores and migrations to run.

A target defines, at module level, either ``service`` (a :class:`~ferryman.MigrationService`,
which wins) or ``stores`` (a list of stores) and ``migrations`` (a list of ``@migration``
classes). Every way this can go wrong becomes a :class:`TargetError` with one line that says
what to fix: the file is missing, the file raised on import (the exception and the
``file:line`` it came from), the names are missing or have the wrong type.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .errors import MigrationDefinitionError, PlanError, TargetError
from .service import MigrationService
from .stores.base import Store


@dataclass
class Target:
    """What a TARGET defines: a ready service, or the stores and migrations to build one."""

    spec: str
    """The TARGET as given on the command line."""
    module: ModuleType
    service: MigrationService | None
    stores: list[Store]
    migrations: list[Any]

    def build_service(self) -> MigrationService:
        """The target's ``service``, or a new one over its ``stores`` and ``migrations``.

        Raises:
            PlanError: the migrations cannot be ordered over these stores.
            MigrationDefinitionError: a migration cannot be created.
        """
        service = self.service if self.service is not None else MigrationService(self.stores, self.migrations)
        service.target = service.target or self.spec
        return service


def is_file_target(spec: str) -> bool:
    """True when ``spec`` names a file rather than an importable module."""
    return spec.endswith(".py") or os.sep in spec or "/" in spec or os.path.isfile(spec)


def load_target(spec: str) -> Target:
    """Import ``spec`` (a ``.py`` file or a dotted module name) and check what it defines.

    Raises:
        TargetError: the file or module is missing, raised while importing, or lacks
            ``service`` / ``stores`` + ``migrations``.
        MigrationDefinitionError: a ``@migration`` class in it is malformed.
        PlanError: a ``service`` it builds cannot be planned.
    """
    module = _import_file(spec) if is_file_target(spec) else _import_module(spec)
    return _read_module(spec, module)


def _import_file(spec: str) -> ModuleType:
    path = os.path.abspath(spec)
    if not os.path.exists(path):
        raise TargetError(f"TARGET {spec}: no such file")
    if os.path.isdir(path):
        raise TargetError(f"TARGET {spec} is a directory; give a .py file or a module name")
    name = os.path.splitext(os.path.basename(path))[0]
    if not name.isidentifier():
        raise TargetError(f"TARGET {spec}: the file name must be a Python identifier (e.g. migrations.py)")
    # The file's directory comes first on sys.path, as for `python file.py`: its sibling
    # modules import, and the module name (which is part of every migration's identity in the
    # progress) is the file's stem, the same on every run.
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise TargetError(f"TARGET {spec}: cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except (MigrationDefinitionError, PlanError, TargetError):
        _restore(name, previous)
        raise
    except BaseException as exc:
        _restore(name, previous)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise TargetError(f"cannot import TARGET {spec}: {describe_import_error(exc, path)}") from exc
    return module


def _restore(name: str, previous: ModuleType | None) -> None:
    if previous is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = previous


def _import_module(spec: str) -> ModuleType:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # `ferryman run pkg.migrations` from the project root
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise TargetError(
                f"TARGET {spec}: no such file, and no module of that name can be imported "
                f"(no module named {exc.name!r})"
            ) from exc
        raise TargetError(f"cannot import TARGET {spec}: {describe_import_error(exc, None)}") from exc
    except (MigrationDefinitionError, PlanError):
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise TargetError(f"cannot import TARGET {spec}: {describe_import_error(exc, None)}") from exc


DRIVER_EXTRAS = {"psycopg": "postgres", "psycopg2": "postgres", "pymysql": "mysql", "MySQLdb": "mysql",
                 "pymongo": "mongo"}
"""The extra that installs a database driver a URL asks for, by the driver's module."""


def describe_import_error(exc: BaseException, path: str | None) -> str:
    """``Type: message (at file:line)``, naming the line of the target that led to it."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{type(exc).__name__}: {exc.msg} (at {_short(exc.filename)}:{exc.lineno})"
    extra = DRIVER_EXTRAS.get((getattr(exc, "name", None) or "").split(".")[0])
    if isinstance(exc, ModuleNotFoundError) and extra:
        return f"{text}: the database driver is not installed (pip install 'ferryman[{extra}]')"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib._bootstrap" not in f.filename]
    if not frames:
        return text
    raised = frames[-1]
    where = f"{_short(raised.filename)}:{raised.lineno}"
    if path is not None:
        own = [f for f in frames if os.path.abspath(f.filename) == path]
        if own and own[-1] is not raised:
            where += f", from {_short(own[-1].filename)}:{own[-1].lineno}"
    return f"{text} (at {where})"


def _short(filename: str) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if relative.startswith(".." + os.sep + "..") else relative


def _read_module(spec: str, module: ModuleType) -> Target:
    service = getattr(module, "service", None)
    if service is not None:
        if not isinstance(service, MigrationService):
            raise TargetError(
                f"TARGET {spec}: `service` must be a ferryman.MigrationService, "
                f"not {type(service).__name__}"
            )
        return Target(spec, module, service, list(service.stores.values()), [])
    stores = getattr(module, "stores", None)
    migrations = getattr(module, "migrations", None)
    if stores is None and migrations is None:
        raise TargetError(
            f"TARGET {spec} defines neither `service` nor `stores` and `migrations` at module level"
        )
    if stores is None or migrations is None:
        missing = "stores" if stores is None else "migrations"
        raise TargetError(f"TARGET {spec} defines no `{missing}` (it needs both `stores` and `migrations`)")
    stores_list = _as_list(spec, "stores", stores)
    bad = [s for s in stores_list if not isinstance(s, Store)]
    if bad:
        raise TargetError(f"TARGET {spec}: `stores` holds {bad[0]!r}, which is not a ferryman Store")
    return Target(spec, module, None, stores_list, _as_list(spec, "migrations", migrations))


def _as_list(spec: str, name: str, value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise TargetError(f"TARGET {spec}: `{name}` must be a list, not {type(value).__name__}")
    return list(value)

