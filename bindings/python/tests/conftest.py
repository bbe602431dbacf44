"""Loads the generated `doorstep` module (bindings/generated/python, made by
bindings/generate.sh, with libdoorstep_bindings.so beside it). DOORSTEP_PYTHON_DIR points
elsewhere, e.g. at bindings generated from a release build."""

import os
import sys
from pathlib import Path

import pytest

GENERATED = Path(os.environ.get("DOORSTEP_PYTHON_DIR", Path(__file__).resolve().parents[2] / "generated" / "python"))
if not (GENERATED / "doorstep.py").exists():
    raise pytest.UsageError(f"{GENERATED}/doorstep.py is missing: run bindings/generate.sh first")
sys.path.insert(0, str(GENERATED))

import doorstep  # noqa: E402


@pytest.fixture
def open_replica(tmp_path):
    """open_replica(name, member=...) -> doorstep.Replica in a temporary directory."""

    def open_(name="phone", member="m-zhang", device=None):
        return doorstep.Replica.open(str(tmp_path / f"{name}.sqlite3"), member, device or f"d-{name}")

    return open_


@pytest.fixture
def new_household():
    def make(name="王"):
        return doorstep.NewHousehold(
            family_name=name,
            address="平洲路 1 号",
            community_id="c-pingzhou",
            branch_id="b-3",
            guardians=[doorstep.NewGuardian(name="李芳", relation="母亲", phone="13800000000")],
            students=[
                doorstep.NewStudent(
                    name="王小明", school="平洲小学", grade="六年级", hukou_status=doorstep.HukouStatus.NON_LOCAL()
                )
            ],
            assigned_members=["m-zhang"],
        )

    return make


@pytest.fixture
def server(tmp_path):
    """A real doorstep-server on 127.0.0.1 (port chosen by the OS), killed after the test."""
    from live_server import Server

    running = Server(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def district(server):
    """One branch, one community, two members sharing one household, a device each."""

    class District:
        pass

    d = District()
    d.server = server
    server.branch("b-3")
    server.community("c-pingzhou")
    server.member("m-zhang", "张老师", "b-3")
    server.member("m-li", "李老师", "b-3")
    d.household = server.household("王", "c-pingzhou", "b-3", ["m-zhang", "m-li"])
    d.zhang = server.device("m-zhang")
    d.li = server.device("m-li")
    return d
