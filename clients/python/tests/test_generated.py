"""The committed stubs are what scripts/generate.py makes from proto/ now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed (the dev extra)")
    spec = importlib.util.spec_from_file_location("generate", ROOT / "scripts" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    sys.modules["generate"] = generate
    spec.loader.exec_module(generate)
    if not (generate.DEFAULT_PROTO_ROOT / generate.PROTO_FILE).is_file():
        pytest.skip("proto/ is not beside this checkout (an installed sdist)")
    written = generate.generate(tmp_path)
    assert [p.name for p in written] == list(generate.GENERATED)
    stale = [
        path.name
        for path in written
        if path.read_text(encoding="utf-8")
        != (generate.PACKAGE_DIR / path.name).read_text(encoding="utf-8")
    ]
    assert not stale, (
        f"{stale} differ from proto/: run `python clients/python/scripts/generate.py` and commit"
    )


def test_the_stubs_import_relative_to_the_package() -> None:
    from durable_iterator.v1 import durable_iterator_pb2, durable_iterator_pb2_grpc

    imported = getattr(
        durable_iterator_pb2_grpc, "durable__iterator_dot_v1_dot_durable__iterator__pb2"
    )
    assert imported is durable_iterator_pb2
    source = (ROOT / "src/durable_iterator/v1/durable_iterator_pb2_grpc.py").read_text()
    assert "from durable_iterator.v1 import" not in source
