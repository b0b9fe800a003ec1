/* rcpt_blocklist in C: refuses recipients whose local part is listed in the plugin's arguments
 * (`examples/c/rcpt_blocklist alice bob`), with the same behaviour as the Rust, Python and JS
 * versions. On the way it writes the recipient to a temporary file, reads it back, and leaves
 * the note `rcpt_blocklist.checked` for later plugins. */

#include <stdio.h>
#include <string.h>

#include "wasmtpd_plugin.h"

/* Writes `address` to a new temp file and reads it back; true if it came back the same. */
static bool round_trip(const char *address) {
    plugin_string_t name, err;
    if (!wasmtpd_plugin_host_temp_file(&name, &err)) {
        plugin_string_free(&err);
        return false;
    }
    plugin_list_u8_t data = {(uint8_t *)address, strlen(address)};
    bool ok = wasmtpd_plugin_host_write_file(&name, 0, &data, &err);
    if (!ok) {
        plugin_string_free(&err);
    } else {
        plugin_list_u8_t back;
        ok = wasmtpd_plugin_host_read_file(&name, 0, 1024, &back, &err);
        if (ok) {
            ok = back.len == data.len && memcmp(back.ptr, address, back.len) == 0;
            plugin_list_u8_free(&back);
        } else {
            plugin_string_free(&err);
        }
    }
    plugin_string_free(&name);
    return ok;
}

void exports_wasmtpd_plugin_rcpt_rcpt(exports_wasmtpd_plugin_rcpt_address_t *recipient,
                                      exports_wasmtpd_plugin_rcpt_list_esmtp_param_t *params,
                                      exports_wasmtpd_plugin_rcpt_hook_result_t *ret) {
    char address[600];
    const plugin_string_t *local = &recipient->local_part;
    if (recipient->domain.is_some) {
        snprintf(address, sizeof address, "%.*s@%.*s", (int)local->len, (const char *)local->ptr,
                 (int)recipient->domain.val.len, (const char *)recipient->domain.val.ptr);
    } else {
        snprintf(address, sizeof address, "%.*s", (int)local->len, (const char *)local->ptr);
    }

    if (!round_trip(address)) {
        wasmtpd_deny_soft(ret, "temporary file round trip failed");
    } else {
        plugin_string_t key, value, err;
        plugin_string_set(&key, "rcpt_blocklist.checked");
        plugin_string_set(&value, address);
        if (!wasmtpd_plugin_host_set_transaction_note(&key, &value, &err)) {
            plugin_string_free(&err);
        }
        plugin_list_string_t args;
        wasmtpd_plugin_host_args(&args);
        bool blocked = false;
        for (size_t i = 0; i < args.len && !blocked; i++) {
            blocked = args.ptr[i].len == local->len && memcmp(args.ptr[i].ptr, local->ptr, local->len) == 0;
        }
        plugin_list_string_free(&args);
        if (blocked) {
            char message[700];
            snprintf(message, sizeof message, "%.*s is blocked by the c plugin", (int)local->len, (const char *)local->ptr);
            wasmtpd_deny(ret, message);
        } else {
            wasmtpd_declined(ret);
        }
    }
    exports_wasmtpd_plugin_rcpt_address_free(recipient);
    exports_wasmtpd_plugin_rcpt_list_esmtp_param_free(params);
}
