"""rcpt_blocklist in Python: refuses recipients whose local part is listed in the plugin's
arguments (`examples/python/rcpt_blocklist alice bob`), with the same behaviour as the Rust, JS
and C versions. On the way it writes the recipient to a temporary file, reads it back, and
leaves the note `rcpt_blocklist.checked` for later plugins."""

from wit_world import exports
from wasmtpd_plugin import host, declined, deny, deny_soft


class Rcpt(exports.Rcpt):
    def rcpt(self, recipient, params):
        address = recipient.local_part + ("@" + recipient.domain if recipient.domain else "")
        name = host.temp_file()
        host.write_file(name, 0, address.encode())
        if host.read_file(name, 0, 1024).decode() != address:
            return deny_soft("temporary file round trip failed")
        host.set_transaction_note("rcpt_blocklist.checked", address)
        if recipient.local_part in host.args():
            return deny(f"{recipient.local_part} is blocked by the python plugin")
        return declined()
