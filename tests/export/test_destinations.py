"""What an export may replace, and what a killed export leaves behind."""

import os
import signal
import socket
import subprocess
import sys
import time

import keras
import pytest

import tfdeblur.models
from tests.conftest import ROOT
from tfdeblur import _atomic
from tfdeblur.cli import main
from tfdeblur.export import check_destination, export_saved_model, export_tflite

SIZE = (17, 17)  # LMFN's minimum


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return tfdeblur.models.build("lmfn", width=4, num_blocks=1)


@pytest.fixture
def project(model, tmp_path):
    """A user's folder: the trained model and a file next to it."""
    folder = tmp_path / "project"
    folder.mkdir()
    model.save(folder / "m.keras")
    (folder / "notes.txt").write_text("keep")
    return folder


def _snapshot(folder) -> dict:
    """Every file under ``folder`` with its bytes (hidden temporaries included)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _fake_saved_model(folder, *extra):
    os.makedirs(folder / "variables")
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.index").write_bytes(b"index")
    for name in extra:
        (folder / name).write_bytes(b"user data")


def test_overwrite_never_replaces_the_source_model_or_its_folder(model, project):
    keras_file = project / "m.keras"
    before = _snapshot(project)
    with pytest.raises(FileExistsError, match=r"not replaced.*contains the source model"):
        export_saved_model(keras_file, project, overwrite=True)
    with pytest.raises(FileExistsError, match=r"not replaced.*it is the source model"):
        export_tflite(keras_file, keras_file, input_size=SIZE, overwrite=True)
    # The destination of a SavedModel must be a folder; of a TFLite file, a TFLite file.
    with pytest.raises(ValueError, match=r"m.keras is a file; the SavedModel folder must be"):
        export_saved_model(model, keras_file, overwrite=True)
    with pytest.raises(FileExistsError, match=r"notes.txt .*not a TFLite flatbuffer"):
        export_tflite(model, project / "notes.txt", input_size=SIZE, overwrite=True)
    assert _snapshot(project) == before


def test_overwrite_replaces_only_saved_model_folders(model, tmp_path):
    _fake_saved_model(tmp_path / "foreign_file", "notes.txt")  # plus the user's file
    (tmp_path / "no_graph" / "variables").mkdir(parents=True)
    (tmp_path / "no_graph" / "variables" / "variables.index").write_bytes(b"index")
    _fake_saved_model(tmp_path / "foreign_variables")
    (tmp_path / "foreign_variables" / "variables" / "data.csv").write_bytes(b"user data")
    before = _snapshot(tmp_path)
    cases = {"foreign_file": r"not a SavedModel folder: it holds notes.txt",
             "no_graph": r"no saved_model.pb or saved_model.pbtxt",
             "foreign_variables": r"variables folder holds data.csv"}
    for name, match in cases.items():
        with pytest.raises(FileExistsError, match=match):
            export_saved_model(model, tmp_path / name, overwrite=True)
    assert _snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == sorted(cases)  # no temporaries either


def test_overwrite_never_replaces_the_working_folder_or_its_parents(model, tmp_path,
                                                                    monkeypatch):
    # Shaped like a SavedModel (assets/ may hold anything): only the rule refuses.
    sm = tmp_path / "sm"
    _fake_saved_model(sm)
    (sm / "assets").mkdir()
    before = _snapshot(tmp_path)
    monkeypatch.chdir(sm / "assets")
    with pytest.raises(FileExistsError, match=r"contains the current working folder"):
        export_saved_model(model, sm, overwrite=True)
    monkeypatch.chdir(sm)
    with pytest.raises(FileExistsError, match=r"it is the current working folder"):
        export_saved_model(model, ".", overwrite=True)
    assert _snapshot(tmp_path) == before


def test_overwrite_never_replaces_a_link_out_of_its_folder(model, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "phone.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3 the app's model")
    _fake_saved_model(outside / "served")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside / "phone.tflite", out / "m.tflite")
    os.symlink(outside / "served", out / "sm")
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=r"symbolic link to .*phone.tflite, outside"):
        export_tflite(model, out / "m.tflite", input_size=SIZE, overwrite=True)
    with pytest.raises(FileExistsError, match=r"symbolic link to .*served, outside"):
        export_saved_model(model, out / "sm", overwrite=True)
    assert _snapshot(tmp_path) == before
    assert sorted(os.listdir(out)) == ["m.tflite", "sm"]
    assert os.path.islink(out / "m.tflite") and os.path.islink(out / "sm")


def test_overwrite_replaces_exports(model, tmp_path):
    # An export of each kind and an empty folder are replaced; a new TFLite
    # file from a SavedModel may not be written inside that SavedModel.
    (tmp_path / "empty").mkdir()
    sm = export_saved_model(model, tmp_path / "empty", overwrite=True)
    assert "saved_model.pb" in os.listdir(sm)
    (tmp_path / "empty" / "saved_model.pb").write_bytes(b"will be replaced")
    export_saved_model(model, tmp_path / "empty", overwrite=True)
    assert (tmp_path / "empty" / "saved_model.pb").read_bytes() != b"will be replaced"

    lite = export_tflite(sm, tmp_path / "m.tflite", input_size=SIZE)
    first = open(lite, "rb").read()
    assert first[4:8] == b"TFL3"
    export_tflite(model, lite, input_size=SIZE, quantize="float16", overwrite=True)
    assert open(lite, "rb").read() != first
    assert sorted(os.listdir(tmp_path)) == ["empty", "m.tflite"]

    before = _snapshot(tmp_path)
    for inside in (tmp_path / "empty" / "assets" / "m.tflite", tmp_path / "empty"):
        with pytest.raises(ValueError, match="lies inside the source SavedModel"):
            export_tflite(sm, inside, input_size=SIZE, overwrite=True)
    assert _snapshot(tmp_path) == before
    with pytest.raises(ValueError, match="kind must be one of"):
        check_destination(tmp_path / "x", "pytorch")


def test_cli_overwrite_refuses_the_working_folder_and_the_model_file(project, capsys,
                                                                     monkeypatch):
    before = _snapshot(project)
    monkeypatch.chdir(project)
    # The CLI checks destinations against the source model before loading it, so the
    # reason given is the source rule (the content rules stop these cases too).
    assert main(["export", "-m", "m.keras", "--saved-model", ".", "--overwrite"]) == 2
    assert "it contains the source model" in capsys.readouterr().err
    assert main(["export", "-m", "m.keras", "--tflite", "m.keras", "--input-size", "17x17",
                 "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "m.keras already exists and is not replaced" in err and "source model" in err
    os.mkdir("sub")
    monkeypatch.chdir("sub")  # the model is outside the working folder now
    assert main(["export", "-m", "../m.keras", "--saved-model", ".", "--overwrite"]) == 2
    assert "it is the current working folder" in capsys.readouterr().err
    os.rmdir(os.path.join(project, "sub"))
    assert _snapshot(project) == before


# ------------------------------------------------------------------ killed exports

# The verifier sleeps before it loads the export, so that it is surely running
# when the test kills the exporting process.
_EXPORT_WITH_SLOW_VERIFIER = r"""
import sys
import tfdeblur.export
import tfdeblur.export.verify as verify
import tfdeblur.models
verify._LOAD_WITHOUT_TFDEBLUR = "import time\ntime.sleep(600)\n" + verify._LOAD_WITHOUT_TFDEBLUR
model = tfdeblur.models.build("lmfn", width=4, num_blocks=1)
tfdeblur.export.export_saved_model(model, sys.argv[1])
"""


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        fields = _proc_stat(int(entry)) if entry.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _running(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds processes through /proc")
def test_killed_export_leaves_no_process_and_next_export_cleans_up(model, tmp_path):
    parent = tmp_path / "exports"
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
           "TMPDIR": str(system_tmp)}
    proc = subprocess.Popen([sys.executable, "-c", _EXPORT_WITH_SLOW_VERIFIER,
                             str(parent / "sm")], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    verifier = None
    try:
        deadline = time.monotonic() + 300
        while verifier is None and time.monotonic() < deadline and proc.poll() is None:
            found = [p for p in _children(proc.pid) if b"-I" in _cmdline(p)]
            verifier = found[0] if found else None
            time.sleep(0.05)
        assert verifier is not None, proc.stderr.read().decode()[-3000:] if proc.poll() else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _running(verifier) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(verifier), "the verifier outlived the killed export"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if verifier is not None and _running(verifier):
            os.kill(verifier, signal.SIGKILL)  # an orphan of this test: do not leave it running
        proc.stderr.close()

    stale = os.listdir(parent)
    assert len(stale) == 1 and stale[0].startswith(".sm.tfdeblur-tmp-"), stale
    # Nothing of the export in the system temp folder (TensorFlow's autograph
    # leaves a generated .py file of its own there, removed only at exit).
    left = [n for n in os.listdir(system_tmp)
            if os.path.isdir(system_tmp / n) or "tfdeblur" in n]
    assert left == []

    path = export_saved_model(model, parent / "sm")
    assert os.listdir(parent) == ["sm"] and "saved_model.pb" in os.listdir(path)


_LEAVE_WORK_FOLDERS = r"""
import os, sys
from tfdeblur import _atomic

# What a kill leaves: a work folder during the verification, and one while the
# old export is set aside to be replaced by the new one.
during, replacing = _atomic.work_folder(sys.argv[1]), _atomic.work_folder(sys.argv[2])
during.__enter__()
work = replacing.__enter__()
os.rename(sys.argv[2], os.path.join(work, _atomic.SET_ASIDE))
os._exit(0)
"""


def test_stale_work_folders_are_removed_only_when_their_process_is_gone(model, tmp_path):
    parent = tmp_path / "exports"
    parent.mkdir()
    _fake_saved_model(parent / "served")
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", _LEAVE_WORK_FOLDERS, str(parent / "new"),
                           str(parent / "served")], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    dead = sorted(os.listdir(parent))
    assert len(dead) == 2 and all(".tfdeblur-tmp-" in n for n in dead), dead

    with open(parent / dead[0] / _atomic.MARKER) as f:
        marker = f.read()
    # Entering a work folder removes the dead process's folders (and puts the
    # old export it had set aside back in its place).
    with _atomic.work_folder(str(parent / "mine")) as mine:
        mine = os.path.basename(mine)
        assert sorted(os.listdir(parent)) == sorted([mine, "served"])
        assert _snapshot(parent / "served") == {"saved_model.pb": b"graph",
                                                "variables/variables.index": b"index"}
        # Kept: this live process's folder, another host's, and a folder
        # without its marker that may be being made right now; an old unmarked
        # one of a dead process goes.
        prefix, suffix = dead[0].split(".tfdeblur-tmp-")
        foreign, young, old = (f"{prefix}.{n}.tfdeblur-tmp-{suffix}"
                               for n in ("foreign", "young", "old"))
        for name in (foreign, young, old):
            os.mkdir(parent / name)
        (parent / foreign / _atomic.MARKER).write_text(
            marker.replace(f'"{socket.gethostname()}"', '"another-host"'))
        os.utime(parent / old, (time.time() - 3600,) * 2)
        _atomic.remove_stale_work_folders(str(parent))
        assert sorted(os.listdir(parent)) == sorted([mine, "served", foreign, young])
    assert sorted(os.listdir(parent)) == sorted(["served", foreign, young])
