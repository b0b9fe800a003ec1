"""my_plugin: refuses recipients at the domains its arguments list
(`my_plugin blocked.example other.example` in config/plugins). One hook, `rcpt`.

Build: `cargo xtask build-plugins`. Test offline:
`wasmtpd plugin test target/plugins/my_plugin.wasm blocked.example --session plugins-wasm/my_plugin/my_plugin.session`"""

from wit_world import exports
from wasmtpd_plugin import host, declined, deny


class Rcpt(exports.Rcpt):
    def rcpt(self, recipient, params):
        domain = (recipient.domain or "").lower()
        if domain in (a.lower() for a in host.args()):
            return deny(f"my_plugin does not take mail for {domain}")
        return declined()
