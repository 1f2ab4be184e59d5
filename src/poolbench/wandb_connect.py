"""Start a run's W&B logger so that W&B never blocks or fails a run (:func:`connect`).

``logger.wandb.mode``:

- ``offline`` (the default) and ``disabled`` start as W&B itself does: nothing here touches
  the network.
- ``online`` first checks that an API key is configured (none: a clear error before
  anything trains). Then the server gets at most ``logger.wandb.init_timeout`` seconds: it
  must answer an HTTP request, and ``wandb.init`` must succeed within the rest of that time
  (W&B's own ``init_timeout`` setting; W&B adds a grace period of about 10 s of its own).
  If the server cannot be reached, or ``wandb.init`` fails to talk to it, the run logs one
  warning and continues in offline mode, with the same W&B run id: the offline run waits in
  ``<run_dir>/wandb/offline-run-*`` for :mod:`poolbench.wandb_sync` (docs/wandb.md).

A wrong W&B setting (no API key, an invalid key format, a bad mode) is still an error: only
the server's absence is forgiven.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import Callable

log = logging.getLogger("poolbench.wandb")

MODES = ("online", "offline", "disabled")

#: The shortest time ``wandb.init`` is given in online mode, whatever the probe has used.
MIN_INIT_S = 3.0


class WandbSetupError(RuntimeError):
    """W&B is configured in a way no fallback can repair (e.g. online without an API key)."""


def check_settings(mode, init_timeout) -> None:
    """Raise ValueError naming ``mode`` or ``init_timeout`` when either is not valid."""
    if mode not in MODES:
        raise ValueError(f"logger.wandb.mode={mode!r} is not valid: use one of "
                         f"{', '.join(MODES)} (or set WANDB_MODE)")
    if isinstance(init_timeout, bool) or not isinstance(init_timeout, (int, float)) \
            or not init_timeout > 0:
        raise ValueError(f"logger.wandb.init_timeout={init_timeout!r} is not valid: use a "
                         "number of seconds > 0")


def server_url() -> str:
    """The W&B server this process would log to (``WANDB_BASE_URL``, W&B's settings files,
    or W&B's default)."""
    import wandb

    return str(wandb.setup().settings.base_url)


def require_api_key(base_url: str) -> None:
    """Raise :class:`WandbSetupError` when no W&B credentials for ``base_url`` are configured
    (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, ``wandb login``'s .netrc or settings),
    without prompting and without the network."""
    try:
        from wandb.sdk.lib.wbauth import authenticate_session
    except ImportError:  # another wandb layout: wandb.init raises its own error instead
        return
    if authenticate_session(host=base_url, source="poolbench", prompt=False,
                            update_session=False) is None:
        raise WandbSetupError(
            f"logger.wandb.mode=online but no W&B API key is configured for {base_url}: run "
            "`wandb login` (or set WANDB_API_KEY), or log offline with WANDB_MODE=offline "
            "and upload later with `wandb sync` (docs/wandb.md)")


def unreachable(base_url: str, timeout: float) -> str | None:
    """Why the W&B server at ``base_url`` cannot be reached within ``timeout`` seconds (the
    whole check, name lookup included), or None when it answers at all: any HTTP status, or
    a TLS handshake this Python cannot verify (W&B may trust other certificates; its own
    init_timeout then decides). Honours ``http(s)_proxy`` / ``no_proxy``, as W&B does."""
    answer: list = []
    probe = threading.Thread(target=lambda: answer.append(_probe(base_url, timeout)),
                             daemon=True)
    probe.start()
    probe.join(timeout)
    return answer[0] if answer else f"no answer within {timeout:g} s"


def _probe(base_url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(base_url, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLError) or isinstance(e, ssl.SSLError):
            return None
        return f"{type(e).__name__}: {reason}"


def _is_setup_error(exc: BaseException) -> bool:
    from wandb.errors import AuthenticationError, UsageError

    return isinstance(exc, (UsageError, AuthenticationError))


def _rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def connect(make_logger: Callable, mode: str, init_timeout: float,
            is_rank_zero: bool | None = None):
    """The W&B logger ``make_logger(mode, settings)`` builds (``settings``: None or a
    ``wandb.Settings``), started now in online mode, else left to start lazily.

    Online: see the module docstring; the fallback is offline, never a failed run. Other
    ranks than zero (whose W&B experiment is a stand-in) never probe the server.
    """
    check_settings(mode, init_timeout)
    if mode != "online" or not (_rank_zero() if is_rank_zero is None else is_rank_zero):
        return make_logger(mode, None)
    import wandb

    base_url = server_url()
    require_api_key(base_url)
    start = time.monotonic()
    reason = unreachable(base_url, init_timeout)
    if reason is None:
        budget = max(init_timeout - (time.monotonic() - start), MIN_INIT_S)
        logger = make_logger("online", wandb.Settings(init_timeout=budget))
        try:
            logger.experiment  # noqa: B018 (wandb.init happens here)
            return logger
        except Exception as e:  # noqa: BLE001 (any failure to talk to the server)
            if _is_setup_error(e):
                raise
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            # The failed online run still holds its id in W&B's service: shut the service
            # down so the same id can start offline (a new service starts with it).
            wandb.teardown()
    log.warning("W&B could not start online (server %s: %s); after %.1f s this run logs to "
                "W&B OFFLINE instead (logger.wandb.init_timeout=%s). Upload it later: "
                "python -m poolbench.wandb_sync <run_dir> (docs/wandb.md).",
                base_url, reason, time.monotonic() - start, init_timeout)
    logger = make_logger("offline", None)
    logger.experiment  # noqa: B018 (start now, so a failure shows before training)
    return logger
