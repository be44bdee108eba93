#include <stdlib.h>

#include "suites.h"

int
main(void)
{
	SRunner *sr;
	int failed;

	sr = srunner_create(buf_suite());
	srunner_add_suite(sr, smtp_suite());
	srunner_add_suite(sr, config_suite());
	srunner_add_suite(sr, tls_suite());
	srunner_add_suite(sr, iptable_suite());
	srunner_add_suite(sr, proxyproto_suite());
	srunner_add_suite(sr, log_suite());
	srunner_add_suite(sr, metrics_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
