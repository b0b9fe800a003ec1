/* Helpers for wasmtpd plugins written in C.
 *
 * A plugin is a directory under plugins-wasm/ with a `world.wit` (the hooks it exports; the
 * world must be named `plugin`) and an `app.c` that defines the generated export function of
 * each hook, e.g. `exports_wasmtpd_plugin_rcpt_rcpt(...)`. `cargo xtask build-plugins` runs
 * `wit-bindgen c` for the world (into plugin.h / plugin.c), compiles with clang for wasm32-wasi
 * and links a component with rustup's wasm-component-ld. Hooks you do not export are never
 * called.
 *
 * Ownership (wit-bindgen's C rules): the arguments of an export belong to you (free them with
 * the generated `*_free` functions); strings you put in the result are freed by the generated
 * code after the call, so give it heap copies (these helpers do). */

#ifndef WASMTPD_PLUGIN_H
#define WASMTPD_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "plugin.h"

typedef wasmtpd_plugin_types_hook_result_t wasmtpd_result_t;

/* Sets `ret` to `verdict` with an optional message (copied; NULL for the hook's default). */
static inline void wasmtpd_verdict(wasmtpd_result_t *ret, wasmtpd_plugin_types_verdict_t verdict, const char *message) {
    ret->verdict = verdict;
    ret->message.is_some = message != NULL;
    if (message != NULL) {
        plugin_string_dup(&ret->message.val, message);
    }
    ret->enhanced_code.is_some = false;
}

/* No opinion: the next plugin decides (DECLINED). */
static inline void wasmtpd_declined(wasmtpd_result_t *ret) { wasmtpd_verdict(ret, WASMTPD_PLUGIN_TYPES_VERDICT_DECLINED, NULL); }
/* Accept; the chain stops (OK). */
static inline void wasmtpd_ok(wasmtpd_result_t *ret, const char *message) { wasmtpd_verdict(ret, WASMTPD_PLUGIN_TYPES_VERDICT_OK, message); }
/* Refuse permanently, 5xx (DENY). */
static inline void wasmtpd_deny(wasmtpd_result_t *ret, const char *message) { wasmtpd_verdict(ret, WASMTPD_PLUGIN_TYPES_VERDICT_DENY, message); }
/* Refuse temporarily, 4xx (DENYSOFT). */
static inline void wasmtpd_deny_soft(wasmtpd_result_t *ret, const char *message) { wasmtpd_verdict(ret, WASMTPD_PLUGIN_TYPES_VERDICT_DENY_SOFT, message); }
/* Refuse permanently and close the connection (DENY_DISCONNECT). */
static inline void wasmtpd_deny_disconnect(wasmtpd_result_t *ret, const char *message) { wasmtpd_verdict(ret, WASMTPD_PLUGIN_TYPES_VERDICT_DENY_DISCONNECT, message); }
/* Refuse temporarily and close the connection (DENYSOFT_DISCONNECT). */
static inline void wasmtpd_deny_soft_disconnect(wasmtpd_result_t *ret, const char *message) { wasmtpd_verdict(ret, WASMTPD_PLUGIN_TYPES_VERDICT_DENY_SOFT_DISCONNECT, message); }
/* Handled: the server skips its own action for this hook (DONE). */
static inline void wasmtpd_done(wasmtpd_result_t *ret, const char *message) { wasmtpd_verdict(ret, WASMTPD_PLUGIN_TYPES_VERDICT_DONE, message); }

/* Whether a WIT string equals a C string. */
static inline bool wasmtpd_string_eq(const plugin_string_t *s, const char *c) {
    size_t n = strlen(c);
    return s->len == n && memcmp(s->ptr, c, n) == 0;
}

#endif
