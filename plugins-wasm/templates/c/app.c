/* my_plugin: refuses recipients at the domains its arguments list
 * (`my_plugin blocked.example other.example` in config/plugins). One hook, `rcpt`.
 *
 * Build: `cargo xtask build-plugins`. Test offline:
 * `wasmtpd plugin test target/plugins/my_plugin.wasm blocked.example --session plugins-wasm/my_plugin/my_plugin.session` */

#include <stdio.h>
#include <strings.h>

#include "wasmtpd_plugin.h"

void exports_wasmtpd_plugin_rcpt_rcpt(exports_wasmtpd_plugin_rcpt_address_t *recipient,
                                      exports_wasmtpd_plugin_rcpt_list_esmtp_param_t *params,
                                      exports_wasmtpd_plugin_rcpt_hook_result_t *ret) {
    char domain[300] = "";
    if (recipient->domain.is_some) {
        snprintf(domain, sizeof domain, "%.*s", (int)recipient->domain.val.len, (const char *)recipient->domain.val.ptr);
    }
    plugin_list_string_t args;
    wasmtpd_plugin_host_args(&args);
    bool blocked = false;
    for (size_t i = 0; i < args.len && !blocked; i++) {
        blocked = args.ptr[i].len == strlen(domain) && strncasecmp((const char *)args.ptr[i].ptr, domain, args.ptr[i].len) == 0;
    }
    plugin_list_string_free(&args);
    if (blocked) {
        char message[400];
        snprintf(message, sizeof message, "my_plugin does not take mail for %s", domain);
        wasmtpd_deny(ret, message);
    } else {
        wasmtpd_declined(ret);
    }
    exports_wasmtpd_plugin_rcpt_address_free(recipient);
    exports_wasmtpd_plugin_rcpt_list_esmtp_param_free(params);
}
