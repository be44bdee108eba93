/* One Check suite per module; tests/unit/main.c runs them all. */
#ifndef SMTPGATE_TEST_SUITES_H
#define SMTPGATE_TEST_SUITES_H

#include <check.h>

Suite	*buf_suite(void);
Suite	*smtp_suite(void);
Suite	*config_suite(void);
Suite	*tls_suite(void);
Suite	*iptable_suite(void);
Suite	*proxyproto_suite(void);
Suite	*log_suite(void);
Suite	*metrics_suite(void);

#endif
