"""Loggers that are safe to leave on everywhere: W&B that never hangs and never prompts.

W&B left to itself blocks at an account prompt (no key, a terminal), fails at once (no key, no
terminal) or hangs for minutes (a key, no network). The mode is therefore decided *before* the
logger exists, from facts that are quick to check, and passed to ``wandb.init`` explicitly:

1. ``WANDB_MODE`` in the environment wins (``online``/``offline``/``disabled``; ``dryrun`` means
   offline, ``run`` online): the user said so.
2. Otherwise the config's ``mode``: ``offline`` and ``disabled`` are taken as they are; ``online``
   and ``auto`` go online only if an API key is present (``WANDB_API_KEY`` or a netrc entry for
   the W&B host) **and** a TCP connection plus a verified TLS handshake with that host succeed
   within ``probe_timeout_s`` (default 2 s, DNS look-up included: the probe runs in a thread that
   is abandoned when late).
   Anything else is offline, with one log line saying why.

Offline runs land in ``<save_dir>/wandb/offline-run-*``; ``wandb sync <that folder>`` uploads them.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")
_ENV_ALIASES = {"dryrun": "offline", "run": "online"}
_DEFAULT_BASE_URL = "https://api.wandb.ai"


def _wandb_host() -> tuple[str, int, bool]:
    """Host, port and whether it speaks TLS, of the W&B server (``WANDB_BASE_URL`` or the public one)."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or _DEFAULT_BASE_URL)
    tls = url.scheme != "http"
    return url.hostname or "api.wandb.ai", url.port or (443 if tls else 80), tls


def has_api_key(host: str | None = None) -> bool:
    """Whether W&B has credentials without asking: ``WANDB_API_KEY`` or a netrc entry for the host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = host or _wandb_host()[0]
    try:
        path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def host_reachable(host: str, port: int, timeout_s: float = 2.0, tls: bool = True) -> bool:
    """A TCP connection to ``host:port`` and, with ``tls``, a verified TLS handshake, within ``timeout_s``.

    The handshake matters: behind a transparent proxy or a captive portal a TCP connection to any
    address succeeds, while only a certificate for ``host`` shows that the server is really there.
    ``socket.create_connection``'s timeout does not bound the DNS look-up, which can block far
    longer without a network, so the attempt runs in a daemon thread that is left behind when
    the time is up.
    """
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s) as sock:
                if tls:
                    context = ssl.create_default_context()
                    with context.wrap_socket(sock, server_hostname=host):
                        pass
            result.append(True)
        except (OSError, ssl.SSLError):
            result.append(False)

    thread = threading.Thread(target=attempt, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def decide_wandb_mode(mode: str = "auto", probe_timeout_s: float = 2.0) -> tuple[str, str]:
    """``(mode, reason)``: the W&B mode to run in (online, offline or disabled) and why."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        chosen = _ENV_ALIASES.get(env, env)
        if chosen not in WANDB_MODES[1:]:
            raise ValueError(f"WANDB_MODE={env!r} is not one of online, offline, disabled")
        return chosen, f"WANDB_MODE={env} in the environment"
    if mode not in WANDB_MODES:
        raise ValueError(f"W&B mode {mode!r} is not one of {', '.join(WANDB_MODES)}")
    if mode in ("offline", "disabled"):
        return mode, f"mode={mode} in the config"
    host, port, tls = _wandb_host()
    if not has_api_key(host):
        return "offline", f"no W&B API key (WANDB_API_KEY or ~/.netrc for {host})"
    if not host_reachable(host, port, probe_timeout_s, tls):
        return "offline", f"{host}:{port} not reachable within {probe_timeout_s:g} s"
    return "online", f"API key present and {host} reachable"


def wandb_logger(
    save_dir: str | os.PathLike[str],
    project: str = "nvc-train",
    name: str | None = None,
    mode: str = "auto",
    probe_timeout_s: float = 2.0,
    log_model: bool | str = False,
    **kwargs: Any,
) -> Any:
    """A Lightning ``WandbLogger`` whose mode is decided first (see the module docstring).

    ``disabled`` still returns a logger (W&B writes nothing), so a config never needs a second
    code path. Extra ``kwargs`` go to ``wandb.init`` (``tags``, ``group``, ``entity``, ...).
    """
    from lightning.pytorch.loggers import WandbLogger

    chosen, reason = decide_wandb_mode(mode, probe_timeout_s)
    if chosen != "online" and log_model:
        log.info("W&B %s: checkpoints are not uploaded (log_model ignored)", chosen)
        log_model = False
    log.info(
        "W&B mode %s (%s)%s", chosen, reason, f"; runs go to {save_dir}/wandb" if chosen == "offline" else ""
    )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    # mode goes to wandb.init as an argument: WandbLogger(offline=True) would set WANDB_MODE in this
    # process's environment, which every later run in the same process would then inherit.
    return WandbLogger(
        save_dir=str(save_dir), project=project, name=name, log_model=log_model, mode=chosen, **kwargs
    )


def finish_wandb(failed: bool) -> None:
    """Close the W&B run of this process, if one was started, with the run's exit status.

    Called in a ``finally`` by ``train``: an unfinished offline run is left incomplete on disk and
    an online one keeps a background process alive.
    """
    import sys

    wandb = sys.modules.get("wandb")  # never import it just to learn that nothing was started
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    try:
        wandb.finish(exit_code=1 if failed else 0)
    except Exception as error:  # closing must never mask the run's own outcome
        log.warning("closing the W&B run failed: %s", error)
