// rcpt_blocklist in JavaScript: refuses recipients whose local part is listed in the plugin's
// arguments (`examples/js/rcpt_blocklist alice bob`), with the same behaviour as the Rust,
// Python and C versions. On the way it writes the recipient to a temporary file, reads it back,
// and leaves the note `rcpt_blocklist.checked` for later plugins.

import { args, tempFile, writeFile, readFile, setTransactionNote } from 'wasmtpd:plugin/host@0.1.0';
import { declined, deny, denySoft } from './wasmtpd-plugin.js';

export const rcpt = {
  rcpt(recipient, params) {
    const address = recipient.domain ? `${recipient.localPart}@${recipient.domain}` : recipient.localPart;
    const name = tempFile();
    writeFile(name, 0n, new TextEncoder().encode(address));
    const back = new TextDecoder().decode(readFile(name, 0n, 1024));
    if (back !== address) {
      return denySoft('temporary file round trip failed');
    }
    setTransactionNote('rcpt_blocklist.checked', address);
    if (args().includes(recipient.localPart)) {
      return deny(`${recipient.localPart} is blocked by the js plugin`);
    }
    return declined();
  },
};
