"""Which pinned requirement set fits this task image. startup-hook.sh runs it before installing
anything: it prints the requirements file on stdout and the reason on stderr, or, where no
supported set fits, says what is missing and the fix and exits 1. Plain syntax on purpose: it must
run, and explain, on Pythons too old for the trial.

    python3 task_image.py
"""

import re
import sys

NEWEST, OLDEST = "requirements.txt", "requirements-oldest.txt"
FIX = (
    "Set environment.image in the experiment config to an image with Python >= 3.10 and PyTorch >= 2.3 "
    '(Determined 0.38\'s default image has both); README, section "Task image".'
)


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


def installed_torch():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def main():
    torch_version = installed_torch() if sys.version_info >= (3, 8) else None
    name, reason = choose(sys.version_info, torch_version)
    if name is None:
        sys.stderr.write("startup-hook.sh: %s. %s\n" % (reason, FIX))
        return 1
    sys.stderr.write("startup-hook.sh: installing %s for %s\n" % (name, reason))
    print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
