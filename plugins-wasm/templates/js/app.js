// my_plugin: refuses recipients at the domains its arguments list
// (`my_plugin blocked.example other.example` in config/plugins). One hook, `rcpt`.
//
// Build: `cargo xtask build-plugins`. Test offline:
// `wasmtpd plugin test target/plugins/my_plugin.wasm blocked.example --session plugins-wasm/my_plugin/my_plugin.session`

import { args } from 'wasmtpd:plugin/host@0.1.0';
import { declined, deny } from './wasmtpd-plugin.js';

export const rcpt = {
  rcpt(recipient, params) {
    const domain = (recipient.domain ?? '').toLowerCase();
    if (args().some((a) => a.toLowerCase() === domain)) {
      return deny(`my_plugin does not take mail for ${domain}`);
    }
    return declined();
  },
};
