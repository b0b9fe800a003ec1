// Helpers for wasmtpd plugins written in JavaScript (built with componentize-js).
//
// A plugin is a module `app.js` exporting one object per hook it implements, named after the
// hook's WIT interface in camelCase (`rcpt`, `dataPost`), plus a small `world.wit` that exports
// those interfaces. Hooks you do not export are never called.
//
//   import * as host from 'wasmtpd:plugin/host@0.1.0';
//   import { declined, deny } from './wasmtpd-plugin.js';
//   export const rcpt = {
//     rcpt(recipient, params) {
//       return host.args().includes(recipient.localPart) ? deny(`${recipient.localPart} is blocked`) : declined();
//     },
//   };
//
// Host functions that return `result<_, string>` throw on error (the message is in `.payload`).

const result = (verdict, message, enhancedCode) => ({ verdict, message, enhancedCode });

/** No opinion: the next plugin decides (DECLINED). */
export const declined = () => result('declined');
/** Accept; the chain stops (OK). */
export const ok = (message) => result('ok', message);
/** Refuse permanently, 5xx (DENY). */
export const deny = (message, enhancedCode) => result('deny', message, enhancedCode);
/** Refuse temporarily, 4xx (DENYSOFT). */
export const denySoft = (message, enhancedCode) => result('deny-soft', message, enhancedCode);
/** Refuse permanently and close the connection (DENY_DISCONNECT). */
export const denyDisconnect = (message, enhancedCode) => result('deny-disconnect', message, enhancedCode);
/** Refuse temporarily and close the connection (DENYSOFT_DISCONNECT). */
export const denySoftDisconnect = (message, enhancedCode) => result('deny-soft-disconnect', message, enhancedCode);
/** Handled: the server skips its own action for this hook (DONE). */
export const done = (message) => result('done', message);
