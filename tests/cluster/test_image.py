"""startup-hook.sh against the cluster's default image as it is, not against our own pins.

The first tests check task_image.py's rules on their own. The others need an image-like
environment (`make test-image` builds .venv-image from tests/image/requirements.txt and passes
IMAGE_VENV): each starts a fresh "container" over it, sources the hook as Determined's entrypoint
does and checks that it only added packages; offline from a wheelhouse made beforehand with the
network cut (then a run to metrics in that container), and from PyPI.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT
from hook_shell import hook_seconds, source_hook

import task_image

IMAGE_VENV = os.environ.get("IMAGE_VENV")
needs_image = pytest.mark.skipif(
    not IMAGE_VENV, reason="no image-like environment: `make test-image` gives one"
)
METRIC_KEYS = {"exact", "f1", "total", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"}


def test_plan_adds_what_the_image_lacks_and_holds_everything_it_has():
    image = {
        "torch": "2.3.0a0+40ec155e58.nv24.03",
        "numpy": "1.24.4",
        "protobuf": "3.20.3",
        "tensorboard": "2.20.0",
        "determined": "0.38.1",
        "safetensors": "0.4.2",
        "odd-build": "2.0 custom",
    }
    wanted, constraints = task_image.plan(task_image.read_pins(task_image.OLDEST), image)
    names = {r.split("==")[0] for r in wanted}
    # The hook's packages at the set's pins (the image's safetensors too); the set's others only where absent.
    assert names == set(task_image.HOOK_PACKAGES) | {"filelock", "boto3", "PyYAML"}
    assert "safetensors==0.8.0" in wanted and "transformers==4.57.6" in wanted
    assert {
        "torch==2.3.0a0+40ec155e58.nv24.03",
        "numpy==1.24.4",
        "protobuf==3.20.3",
        "tensorboard==2.20.0",
        "determined==0.38.1",
        "odd-build===2.0 custom",
    } == set(constraints)
    assert not task_image.satisfied("safetensors==0.8.0", {"safetensors": "0.4.2"})
    assert task_image.satisfied("PyYAML==6.0.3", {"pyyaml": "6.0.3"})


def test_every_hook_package_is_pinned_in_both_sets():
    for name in (task_image.NEWEST, task_image.OLDEST):
        pinned = {task_image.canonical(package) for package, _ in task_image.read_pins(name)}
        assert {
            task_image.canonical(p) for p in task_image.HOOK_PACKAGES + task_image.IMAGE_PACKAGES
        } <= pinned, name


def test_wheelhouse_location(tmp_path, monkeypatch):
    monkeypatch.setenv(task_image.WHEELHOUSE_VARIABLE, str(tmp_path))
    assert task_image.wheelhouse_from_environment() == (str(tmp_path), None)
    monkeypatch.setenv(task_image.WHEELHOUSE_VARIABLE, "")  # empty: PyPI, whatever exists
    assert task_image.wheelhouse_from_environment() == (None, None)
    monkeypatch.setenv(task_image.WHEELHOUSE_VARIABLE, str(tmp_path / "absent"))
    where, error = task_image.wheelhouse_from_environment()
    assert where is None and f"SQUAD_WHEELHOUSE={tmp_path / 'absent'} is not a directory" in error
    # The default wheelhouse is the bind mount's; sentencepiece 0.2.3 ships manylinux_2_27 wheels.
    assert {"manylinux_2_27_x86_64", "manylinux2014_x86_64"} <= set(task_image.default_platforms())


def test_wheels_refuses_an_image_outside_the_range(tmp_path):
    proc = subprocess.run(
        [sys.executable, "task_image.py", "wheels", str(tmp_path), "--torch-version", "2.2.2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert (
        proc.returncode == 1
        and "PyTorch 2.2.2; the trial needs PyTorch 2.3 or newer" in proc.stderr
    )


def image_python():
    python = os.path.join(os.path.abspath(IMAGE_VENV), "bin", "python")
    assert os.path.exists(
        python
    ), f"IMAGE_VENV={IMAGE_VENV} has no bin/python: run `make test-image`"
    return python


def python_output(python, code):
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def new_container(path):
    """A fresh task container over the image: a venv of the image's interpreter that sees the
    image's packages behind its own (a .pth), so whatever the hook installs lands in the container
    and the image stays as built, as a container's layer over its image."""
    image = image_python()
    subprocess.run([image, "-m", "venv", "--without-pip", str(path)], check=True)
    python = os.path.join(str(path), "bin", "python")
    site = python_output(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    image_site = python_output(image, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    with open(os.path.join(site, "image.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({image_site!r})\n")
    return python


def freeze(python, env):
    """{"name==version"} with names in canonical form."""
    proc = subprocess.run(
        [python, "-m", "pip", "freeze", "--all"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return {
        task_image.canonical(line.split("==")[0]) + line[len(line.split("==")[0]) :]
        for line in proc.stdout.split()
    }


def pip_check(python, env):
    proc = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, env=env)
    return {line for line in proc.stdout.splitlines() if line and not line.startswith("No broken")}


def container_env(tmp_path, python, wheelhouse):
    """A task container's environment: its Python as DET_PYTHON_EXECUTABLE (python3 on the PATH is
    not it), a HOME with no pip cache, this machine's pip settings (certificates, timeouts)."""
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in ("LANG", "TERM")}
    return {
        **env,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "DET_PYTHON_EXECUTABLE": python,
        task_image.WHEELHOUSE_VARIABLE: wheelhouse,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def network_cut():
    """unshare -n: the hook and the run get a network namespace with no interface up."""
    probe = (
        subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
        if shutil.which("unshare")
        else None
    )
    if probe is None or probe.returncode != 0:
        reason = probe.stderr.strip() if probe is not None else "no unshare on the PATH"
        print(
            f"\nNETWORK NOT CUT: `unshare -n` was refused ({reason}); it needs root. The hook still installs "
            "with --no-index from the wheelhouse."
        )
        return ()
    return ("unshare", "-n")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """What a login node with internet makes for this image, with the project's own command."""
    version, torch_version = python_output(
        image_python(),
        "import sys, torch; print('%d.%d' % sys.version_info[:2], torch.__version__)",
    ).split()
    where = str(tmp_path_factory.mktemp("shared-filesystem") / "wheelhouse")
    proc = subprocess.run(
        [
            sys.executable,
            "task_image.py",
            "wheels",
            where,
            "--python-version",
            version,
            "--torch-version",
            torch_version,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return where


ADDED = {}


def check_hook(tmp_path, wheelhouse, then="", prefix=()):
    """Sources the hook in a fresh container over the image; asserts the shell's options are as
    they were and that the image's packages are all still there at their versions. Returns the
    shell, the packages added and the container's Python."""
    python = new_container(tmp_path / "container")
    env = container_env(tmp_path, python, wheelhouse)
    image_packages, image_conflicts = freeze(python, env), pip_check(python, env)
    assert not any(
        p.startswith(("transformers==", "tokenizers==", "sentencepiece==")) for p in image_packages
    )
    shell, before, after = source_hook(env, tmp_path / "state", then=then, prefix=prefix)
    assert shell.returncode == 0, shell.stderr[-6000:]
    pip_seconds = float(shell.stderr.split("startup-hook.sh: installed in ")[1].split(" s")[0])
    print(
        f"\nstartup-hook.sh from {'the wheelhouse' if wheelhouse else 'PyPI'}: {hook_seconds(tmp_path / 'state'):.1f} s "
        f"in the entrypoint's shell, of which pip {pip_seconds:.1f} s"
    )
    assert before == after, (before, after)
    assert "set -o errexit" in after and "set +o nounset" in after and "set +o pipefail" in after
    now = freeze(python, env)
    assert (
        image_packages <= now
    ), f"the hook replaced {sorted(image_packages - now)} with {sorted(now - image_packages)}"
    added = now - image_packages
    assert {
        "transformers==4.57.6",
        "tokenizers==0.22.2",
        "sentencepiece==0.2.3",
        "safetensors==0.8.0",
        "huggingface-hub==0.36.2",
    } <= added, added
    assert pip_check(python, env) <= image_conflicts
    return shell, added, python


@needs_image
def test_hook_offline_from_the_wheelhouse_then_a_run_to_metrics(
    tmp_path, wheelhouse, squad_files, tiny_model
):
    with open(os.path.join(ROOT, "configs", "local_tiny.yaml")) as f:
        config = yaml.safe_load(f)
    config["data"].update(
        train_file=squad_files[0], validation_file=squad_files[1], cache_dir=str(tmp_path / "cache")
    )
    config["hyperparameters"].update(
        pretrained_model_name=tiny_model,
        global_batch_size=8,
        max_seq_length=128,
        doc_stride=32,
        max_batches=6,
        reporting_period_batches=2,
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    # The trial starts in the shell that sourced the hook, as the entrypoint execs it.
    run = f'"$DET_PYTHON_EXECUTABLE" model_def.py --config {tmp_path / "config.yaml"} --output-dir {tmp_path / "out"}'
    shell, added, python = check_hook(tmp_path, wheelhouse, then=run, prefix=network_cut())
    assert "installing from the wheelhouse" in shell.stderr
    metrics = json.loads(shell.stdout.strip().splitlines()[-1])
    assert METRIC_KEYS <= set(metrics) and metrics["total"] == 120 and 0 <= metrics["f1"] <= 100
    # The image's NumPy, protobuf and tensorboard are the ones the trial ran with.
    versions = python_output(
        python,
        "import numpy, google.protobuf as p, tensorboard as t; "
        "print(numpy.__version__, p.__version__, t.__version__)",
    )
    assert versions == "1.24.4 3.20.3 2.20.0"
    assert os.listdir(tmp_path / "out" / "tensorboard")
    ADDED["wheelhouse"] = added


@needs_image
def test_hook_from_pypi_adds_the_same_packages(tmp_path):
    shell, added, _ = check_hook(tmp_path, "")
    assert "installing from PyPI" in shell.stderr
    if "wheelhouse" in ADDED:
        assert added == ADDED["wheelhouse"]


@needs_image
def test_hook_stops_the_task_on_a_wheelhouse_without_the_wheels(tmp_path):
    python = new_container(tmp_path / "container")
    (tmp_path / "empty-wheelhouse").mkdir()
    env = container_env(tmp_path, python, str(tmp_path / "empty-wheelhouse"))
    image_packages = freeze(python, env)
    shell, _, after = source_hook(
        env, tmp_path / "state", then="echo trial started", prefix=network_cut()
    )
    assert shell.returncode == 1 and after is None and "trial started" not in shell.stdout
    assert (
        "make it again on a machine with internet" in shell.stderr
        and "python3 task_image.py wheels DIR" in shell.stderr
    )
    version = python_output(python, "import sys; print('%d.%d' % sys.version_info[:2])")
    assert f"--python-version {version} --torch-version" in shell.stderr
    assert freeze(python, env) == image_packages
