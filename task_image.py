"""What startup-hook.sh installs in a task container, and the wheelhouse for clusters whose nodes
have no internet. Plain syntax on purpose: it must run, and explain, on Pythons too old for the
trial.

    python3 task_image.py            # which requirement set fits this image (stdout), and why (stderr)
    python3 task_image.py install    # what startup-hook.sh runs: install what this image lacks
    python3 task_image.py wheels DIR [--python-version 3.10] [--torch-version 2.3.0a0] [--arch x86_64 | --platform TAG...]

`install` adds the packages below at the pins of the set that fits the image, and any other package
of that set the image lacks, and changes nothing the image has: every installed distribution is a
pip constraint at its own version, so pip fails rather than replace one. It installs from the
wheelhouse when there is one (WHEELHOUSE_VARIABLE, default DEFAULT_WHEELHOUSE), from PyPI otherwise.
`wheels` is for a machine with internet: it downloads what `install` may need, for the cluster
image's Python and platform, into DIR.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

NEWEST, OLDEST = "requirements.txt", "requirements-oldest.txt"
FIX = (
    "Set environment.image in the experiment config to an image with Python >= 3.10 and PyTorch >= 2.3 "
    '(Determined 0.38\'s default image has both); README, section "Task image".'
)
# What the trial needs that task images lack: always installed at the set's pins (both requirement
# files pin each). A package the project adds (a parquet reader, say) is one more name here.
HOOK_PACKAGES = (
    "transformers",
    "tokenizers",
    "safetensors",
    "huggingface_hub",
    "sentencepiece",
    "pyarrow",  # parquet SQuAD files (squad_file.py)
)
# The image's own, built for its CUDA or installed by Determined at task start: never installed.
IMAGE_PACKAGES = ("torch", "determined")
WHEELHOUSE_VARIABLE = "SQUAD_WHEELHOUSE"
DEFAULT_WHEELHOUSE = "/mnt/data/wheelhouse"  # the configs' bind mount
# Determined 0.38.1's default image (determinedai/pytorch-ngc:0.38.1): Ubuntu 22.04 (glibc 2.35) on
# x86_64, Python 3.10, NVIDIA's PyTorch 2.3.0a0.
DEFAULT_PYTHON, DEFAULT_TORCH, DEFAULT_GLIBC_MINOR = "3.10", "2.3.0a0", 35
# A PEP 440 version, loosely (pip normalizes the spellings); anything else is pinned with "===".
PEP440 = re.compile(
    r"^(\d+!)?\d+(\.\d+)*([-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?\d*)?"
    r"([-_.]?(post|rev|r)[-_.]?\d*|-\d+)?([-_.]?dev[-_.]?\d*)?(\+[a-z0-9]+([-_.][a-z0-9]+)*)?$",
    re.IGNORECASE,
)


def log(message):
    sys.stderr.write("startup-hook.sh: %s\n" % message)
    sys.stderr.flush()


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def torch_release(version):
    """(major, minor, patch, final) of a PyTorch version string; a pre-release (NVIDIA's NGC builds
    are "2.3.0a0+...") sorts below its release, as packaging and transformers order them."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?([^+]*)", version)
    if not match:
        return None
    final = 0 if re.search(r"a|b|rc|dev", match.group(4)) else 1
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0), final


def choose(python, torch_version):
    """(requirements file or None, reason) for a Python version tuple and PyTorch version string."""
    py = "Python %d.%d" % tuple(python[:2])
    if tuple(python[:2]) < (3, 10):
        return None, "this task image has %s; the trial needs Python 3.10 or newer" % py
    if torch_version is None:
        return None, (
            "this task image has no PyTorch; the trial uses the image's own PyTorch "
            "(2.3 or newer) and never installs one"
        )
    release = torch_release(torch_version)
    if release is None or release < (2, 3, 0, 0):
        return (
            None,
            "this task image has PyTorch %s; the trial needs PyTorch 2.3 or newer" % torch_version,
        )
    have = "%s and PyTorch %s" % (py, torch_version)
    if tuple(python[:2]) >= (3, 11) and release >= (2, 6, 0, 1):
        return NEWEST, "%s: transformers 5 and NumPy 2" % have
    return (
        OLDEST,
        "%s: transformers 4.57 and NumPy 1 (transformers 5 needs Python >= 3.11 and PyTorch >= 2.6)"
        % have,
    )


def read_pins(name):
    """[(name, version)] of a requirement file, in its order."""
    here = os.path.dirname(os.path.abspath(__file__))
    pins = []
    with open(os.path.join(here, name)) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                package, version = line.split("==")
                pins.append((package.strip(), version.strip()))
    return pins


def installed_versions():
    """{canonical name: version} of every distribution this Python sees, the first on sys.path of
    each name (the one it imports)."""
    from importlib.metadata import distributions

    found = {}
    for entry in sys.path:
        for dist in distributions(path=[entry]):
            name = dist.metadata["Name"]
            if name and canonical(name) not in found:
                found[canonical(name)] = dist.version
    return found


def plan(pins, installed):
    """(requirements to install, constraints): the hook's packages at their pins, the set's other
    packages where the image lacks them; every other installed distribution held at its version."""
    ours = set(canonical(n) for n in HOOK_PACKAGES)
    image = set(canonical(n) for n in IMAGE_PACKAGES)
    wanted = [
        "%s==%s" % (name, version)
        for name, version in pins
        if canonical(name) not in image
        and (canonical(name) in ours or canonical(name) not in installed)
    ]
    constraints = [
        "%s%s%s" % (name, "==" if PEP440.match(version) else "===", version)
        for name, version in sorted(installed.items())
        if name not in ours
    ]
    return wanted, constraints


def satisfied(requirement, installed):
    name, version = requirement.split("==")
    return installed.get(canonical(name)) == version


def installed_torch():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def image_set():
    """The requirement set that fits this Python and its PyTorch, or None after saying why not."""
    torch_version = installed_torch() if sys.version_info >= (3, 8) else None
    name, reason = choose(sys.version_info, torch_version)
    if name is None:
        log("%s. %s" % (reason, FIX))
        return None, torch_version
    log("%s fits this image (%s)" % (name, reason))
    return name, torch_version


def wheelhouse_from_environment():
    """(directory or None, error or None): the variable's directory when set (empty: PyPI), else
    the default one if it exists."""
    value = os.environ.get(WHEELHOUSE_VARIABLE)
    if value is None:
        return (DEFAULT_WHEELHOUSE if os.path.isdir(DEFAULT_WHEELHOUSE) else None), None
    if value and not os.path.isdir(value):
        return None, (
            "%s=%s is not a directory on this node. Check the experiment config's bind_mounts, "
            "build it with `python3 task_image.py wheels %s` on a machine with internet, or set "
            '%s to an empty value to install from PyPI; README, section "Offline clusters".'
            % (WHEELHOUSE_VARIABLE, value, value, WHEELHOUSE_VARIABLE)
        )
    return value or None, None


def install():
    name, torch_version = image_set()
    if name is None:
        return 1
    wheelhouse, error = wheelhouse_from_environment()
    if error:
        log(error)
        return 1
    installed = installed_versions()
    wanted, constraints = plan(read_pins(name), installed)
    if all(satisfied(r, installed) for r in wanted):
        log("nothing to install: this image already has %s" % " ".join(wanted))
    else:
        source = "the wheelhouse %s" % wheelhouse if wheelhouse else "PyPI"
        log(
            "installing from %s, keeping the image's %d packages as they are: %s"
            % (source, len(installed), " ".join(r for r in wanted if not satisfied(r, installed)))
        )
        handle, constraint_file = tempfile.mkstemp(prefix="image-constraints-", suffix=".txt")
        with os.fdopen(handle, "w") as f:
            f.write("\n".join(constraints) + "\n")
        # --no-compile: byte-compiling all of transformers took about two thirds of the install
        # (README, "Offline clusters"); Python compiles the few modules the trial imports on first use.
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--no-compile",
            "--constraint",
            constraint_file,
        ] + wanted
        if wheelhouse:
            command += ["--no-index", "--find-links", wheelhouse, "--only-binary", ":all:"]
        start = time.time()
        # Task containers run pip as root; the variable (not the flag) because an older pip ignores it.
        code = subprocess.call(command, env=dict(os.environ, PIP_ROOT_USER_ACTION="ignore"))
        os.remove(constraint_file)
        if code != 0:
            log(
                "pip could not install %s from %s while keeping every package this image has (pip's reason is "
                "above). %s"
                % (
                    " ".join(wanted),
                    source,
                    rebuild_hint(wheelhouse, torch_version)
                    if wheelhouse
                    else 'Use an image whose packages fit (README, section "Task image").',
                )
            )
            return 1
        log("installed in %.1f s" % (time.time() - start))
    check = (
        "import sys, sentencepiece; from transformers.utils import is_torch_available; "
        "sys.exit(not is_torch_available())"
    )
    if subprocess.call([sys.executable, "-c", check]) != 0:
        log(
            "after installing %s, transformers cannot use this image's PyTorch (%s); README, section "
            '"Task image".' % (name, torch_version)
        )
        return 1
    return 0


def rebuild_hint(wheelhouse, torch_version):
    return (
        "If the wheelhouse was made for another Python, platform or set, make it again on a machine with "
        "internet, DIR being %s as that machine sees it: python3 task_image.py wheels DIR --python-version %d.%d "
        '--torch-version %s; README, section "Offline clusters".'
        % (wheelhouse, sys.version_info[0], sys.version_info[1], torch_version)
    )


def default_platforms(glibc_minor=DEFAULT_GLIBC_MINOR, arch="x86_64"):
    """pip --platform tags a Linux with this glibc runs: pip does not widen a manylinux_2_N tag
    to the older ones itself."""
    tags = ["manylinux_2_%d_%s" % (minor, arch) for minor in range(glibc_minor, 16, -1)]
    return tags + ["manylinux2014_%s" % arch]


def wheels(argv):
    parser = argparse.ArgumentParser(
        prog="task_image.py wheels",
        description="On a machine with internet: download the wheels startup-hook.sh installs, for the cluster "
        "image's Python and platform, into DIR (on the filesystem the nodes share).",
    )
    parser.add_argument("dir")
    parser.add_argument(
        "--python-version",
        default=DEFAULT_PYTHON,
        help="the task image's Python, major.minor (default %(default)s: Determined 0.38.1's image)",
    )
    parser.add_argument(
        "--torch-version",
        default=DEFAULT_TORCH,
        help="the task image's PyTorch; with the Python it picks the requirement set (default %(default)s)",
    )
    parser.add_argument(
        "--arch",
        default="x86_64",
        help="the nodes' machine, for the default platforms (aarch64 for ARM)",
    )
    parser.add_argument(
        "--platform",
        action="append",
        help="a pip platform tag the image runs, repeatable; replaces the default, manylinux up to "
        "glibc 2.%d (list every one the image runs: pip does not widen them)" % DEFAULT_GLIBC_MINOR,
    )
    args = parser.parse_args(argv)
    match = re.match(r"^(\d+)\.(\d+)$", args.python_version)
    if not match:
        parser.error(
            "--python-version %s: give major.minor, for example 3.10" % args.python_version
        )
    python = (int(match.group(1)), int(match.group(2)))
    name, reason = choose(python, args.torch_version)
    if name is None:
        sys.stderr.write("error: %s\n" % reason)
        return 1
    image = set(canonical(n) for n in IMAGE_PACKAGES)
    # The whole set but the image's own: an image that lacks any of it gets it from here too.
    requirements = ["%s==%s" % pin for pin in read_pins(name) if canonical(pin[0]) not in image]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        "%d.%d" % python,
        "--dest",
        args.dir,
    ]
    platforms = args.platform or default_platforms(arch=args.arch)
    for tag in platforms:
        command += ["--platform", tag]
    sys.stderr.write(
        "%s for %s: downloading %s into %s\n" % (name, reason, " ".join(requirements), args.dir)
    )
    if subprocess.call(command + requirements) != 0:
        sys.stderr.write(
            "error: pip could not download every wheel for Python %d.%d on %s (its message is above)\n"
            % (python + (" ".join(platforms),))
        )
        return 1
    sys.stderr.write(
        "wrote %d wheels to %s. On the cluster, set %s to this directory as the task containers see it "
        '(the default is %s); README, section "Offline clusters".\n'
        % (
            len([f for f in os.listdir(args.dir) if f.endswith(".whl")]),
            args.dir,
            WHEELHOUSE_VARIABLE,
            DEFAULT_WHEELHOUSE,
        )
    )
    return 0


def main(argv):
    if argv[:1] == ["install"]:
        return install()
    if argv[:1] == ["wheels"]:
        return wheels(argv[1:])
    if argv:
        sys.stderr.write("usage: python3 task_image.py [install | wheels DIR ...]\n")
        return 2
    name, _ = image_set()
    if name is None:
        return 1
    print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
