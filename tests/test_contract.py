"""The graph contract lives in the core (``lipforce_sdk.contract``), not in a backend module."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # engine/ from the source tree, whatever ran before this file


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
    return mods


def test_exporter_and_engine_builder_take_the_contract_from_the_core():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if "backends" in m)
                 for p in [ROOT / "export" / "exporter.py", *sorted((ROOT / "engine").glob("*.py"))]}
    assert not {k: v for k, v in offenders.items() if v}, offenders
    assert "lipforce_sdk.contract" in _imports(ROOT / "export" / "exporter.py")


def test_one_backend_error_and_state_names():
    from engine.errors import EngineError
    from lipforce_sdk.backends import base
    from lipforce_sdk.contract import BackendError, state_out_name

    assert base.BackendError is BackendError and issubclass(EngineError, BackendError)
    assert state_out_name("kv_k_3") == "kv_k_out_3"
    assert state_out_name("enc_cache_10") == "enc_cache_out_10"
    assert base.state_out_name is state_out_name
