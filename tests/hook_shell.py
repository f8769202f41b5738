"""startup-hook.sh sourced the way Determined 0.38.1's trial entrypoint sources it
(master/static/srv/entrypoint.sh: `set -e`, `set -x`, `test -f startup-hook.sh && source
startup-hook.sh`, `set +x`), with the shell's options written down just before and just after."""

import os
import subprocess

from conftest import ROOT

# Builtins with a redirection run in the entrypoint's own shell (a $(...) subshell would drop -e).
RECORD = (
    'set +o > "$HOOK_STATE/options-{0}"; shopt -p > "$HOOK_STATE/shopt-{0}"; echo "$-" > "$HOOK_STATE/flags-{0}"; '
    'echo "$EPOCHREALTIME" > "$HOOK_STATE/time-{0}"'
)
ENTRYPOINT = "\n".join(
    [
        "set -e",
        "set -x",
        RECORD.format("before"),
        'test -f "startup-hook.sh" && source "startup-hook.sh"',
        RECORD.format("after"),
        "set +x",
    ]
)


def source_hook(env, state_dir, then="", prefix=(), timeout=900):
    """(completed bash process, options before the hook, options after it or None when the shell
    stopped inside it). `then` runs after the hook in the same shell, as the trial does."""
    os.makedirs(state_dir, exist_ok=True)
    proc = subprocess.run(
        [*prefix, "bash", "-c", ENTRYPOINT + "\n" + then],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**env, "HOOK_STATE": str(state_dir)},
        timeout=timeout,
    )

    def options(when):
        paths = [
            os.path.join(state_dir, f"{kind}-{when}") for kind in ("options", "shopt", "flags")
        ]
        if not all(os.path.exists(p) for p in paths):
            return None
        return "".join(open(p).read() for p in paths)

    return proc, options("before"), options("after")


def hook_seconds(state_dir):
    """Wall time of `source startup-hook.sh` in the last source_hook with this state_dir."""
    before, after = (
        float(open(os.path.join(state_dir, f"time-{when}")).read()) for when in ("before", "after")
    )
    return after - before
