/* Test fixture: a C plugin that spins forever at RCPT (its time limit must stop it). */

#include "wasmtpd_plugin.h"

void exports_wasmtpd_plugin_rcpt_rcpt(exports_wasmtpd_plugin_rcpt_address_t *recipient,
                                      exports_wasmtpd_plugin_rcpt_list_esmtp_param_t *params,
                                      exports_wasmtpd_plugin_rcpt_hook_result_t *ret) {
    volatile unsigned long n = 0;
    for (;;) {
        n++;
    }
}
