"""Helpers for wasmtpd plugins written in Python (built with componentize-py).

A plugin is a module `app.py` with one class per hook it implements, named after the hook's WIT
interface (``Rcpt`` for ``wasmtpd:plugin/rcpt``, ``DataPost`` for ``data-post``), subclassing
the generated protocol, plus a small ``world.wit`` that exports those interfaces. Hooks you do
not export are never called. This module gives the verdict helpers and re-exports the host::

    from wit_world import exports
    from wasmtpd_plugin import host, declined, deny

    class Rcpt(exports.Rcpt):
        def rcpt(self, recipient, params):
            if recipient.local_part in host.args():
                return deny(f"{recipient.local_part} is blocked")
            return declined()
"""

from wit_world.imports import host, types

__all__ = ["host", "types", "declined", "ok", "deny", "deny_soft", "deny_disconnect",
           "deny_soft_disconnect", "done", "log_info", "log_warn"]


def _result(verdict, message=None, enhanced_code=None):
    return types.HookResult(verdict, message, enhanced_code)


def declined():
    """No opinion: the next plugin decides (DECLINED)."""
    return _result(types.Verdict.DECLINED)


def ok(message=None):
    """Accept; the chain stops (OK)."""
    return _result(types.Verdict.OK, message)


def deny(message=None, enhanced_code=None):
    """Refuse permanently, 5xx (DENY)."""
    return _result(types.Verdict.DENY, message, enhanced_code)


def deny_soft(message=None, enhanced_code=None):
    """Refuse temporarily, 4xx (DENYSOFT)."""
    return _result(types.Verdict.DENY_SOFT, message, enhanced_code)


def deny_disconnect(message=None, enhanced_code=None):
    """Refuse permanently and close the connection (DENY_DISCONNECT)."""
    return _result(types.Verdict.DENY_DISCONNECT, message, enhanced_code)


def deny_soft_disconnect(message=None, enhanced_code=None):
    """Refuse temporarily and close the connection (DENYSOFT_DISCONNECT)."""
    return _result(types.Verdict.DENY_SOFT_DISCONNECT, message, enhanced_code)


def done(message=None):
    """Handled: the server skips its own action for this hook (DONE)."""
    return _result(types.Verdict.DONE, message)


def log_info(message):
    host.log(types.LogLevel.INFO, message)


def log_warn(message):
    host.log(types.LogLevel.WARN, message)
