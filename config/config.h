/*
 * config: the INI file, read with inih in three steps: collect (a table of
 * keys, one small setter per type), complete (defaults), validate (each
 * failure one "FILE:LINE: what is wrong" message).
 */
#ifndef SMTPGATE_CONFIG_H
#define SMTPGATE_CONFIG_H

#include <sys/socket.h>
#include <netinet/in.h>
#include <stddef.h>

#define CONFIG_MAX_CERTS	4
#define CONFIG_MAX_ADDRS	8
#define CONFIG_MAX_LISTENERS	32
#define CONFIG_MAX_LINE_MAX	8192	/* what the session buffers allow */
#define CONFIG_MAX_CIDRS	16
#define CONFIG_MAX_UPSTREAMS	8
#define CONFIG_MAX_PORTS	8
#define CONFIG_MAX_SNI		32	/* [tls:NAME] sections */
#define CONFIG_MAX_SNI_NAME	253	/* a DNS name (RFC 1035 section 2.3.4) */

struct config_addr {
	struct sockaddr_storage	 ss;
	socklen_t		 len;
	char			 text[300];	/* as written in the file */
	int			 line;		/* where */
};

enum config_mode { CONFIG_MODE_NONE, CONFIG_MODE_IMPLICIT, CONFIG_MODE_STARTTLS,
		   CONFIG_MODE_EGRESS };

/* How an upstream port is secured: auto is implicit on 465, else STARTTLS. */
enum config_up_tls { CONFIG_UP_AUTO, CONFIG_UP_IMPLICIT, CONFIG_UP_STARTTLS };
enum config_up_auth { CONFIG_AUTH_NONE, CONFIG_AUTH_PLAIN, CONFIG_AUTH_LOGIN };
/* What an egress listener does with an app's own AUTH. */
enum config_app_auth { CONFIG_APP_AUTH_IGNORE, CONFIG_APP_AUTH_REFUSE,
		       CONFIG_APP_AUTH_OFFER };

/* [upstream:NAME]: a smarthost an egress listener sends to. */
struct config_upstream {
	char			 name[64];
	int			 line;
	char			*host;
	struct config_addr	 addr;		/* host, resolved; port unset */
	long			 ports[CONFIG_MAX_PORTS];
	int			 nports;
	enum config_up_tls	 tls;
	int			 verify;	/* -1 unset */
	char			*ca_file;	/* NULL: the system store */
	char			*server_name;	/* NULL: host */
	enum config_up_auth	 auth;
	char			*username;
	char			*password_file;
	char			*password;	/* read from password_file */
	char			*helo;		/* NULL: [gateway] hostname */
};

/* How the backend learns the client's address. */
enum config_identity { CONFIG_ID_UNSET, CONFIG_ID_NONE, CONFIG_ID_PROXY_V1,
		       CONFIG_ID_PROXY_V2, CONFIG_ID_XCLIENT };

/* A network: family AF_INET or AF_INET6, the address, the prefix length. */
struct config_cidr {
	int		 family;
	unsigned char	 addr[16];
	int		 bits;
};
enum config_log { CONFIG_LOG_ERROR, CONFIG_LOG_WARN, CONFIG_LOG_INFO,
		  CONFIG_LOG_DEBUG };
enum config_log_format { CONFIG_LOG_TEXT, CONFIG_LOG_JSON };

#define CONFIG_MAX_WORKERS	64

/* Whether a listener asks TLS clients for a certificate. */
enum config_verify { CONFIG_VERIFY_NONE, CONFIG_VERIFY_OPTIONAL,
		     CONFIG_VERIFY_REQUIRE };

struct config_listener {
	char			 name[64];
	int			 line;		/* of its [listener:NAME] */
	struct config_addr	 addrs[CONFIG_MAX_ADDRS];
	int			 naddrs;
	enum config_mode	 mode;
	int			 require_tls;	/* -1 unset, 0, 1 */
	struct config_addr	 backend;	/* len 0: the [gateway] one */
	enum config_identity	 client_identity;	/* UNSET: the [gateway] one */
	int			 accept_proxy;	/* PROXYPROTO_V1|V2 bits; 0: off */
	struct config_cidr	 trusted[CONFIG_MAX_CIDRS];
	int			 ntrusted;
	char			 upstream_name[64];	/* egress: its upstream */
	int			 upstream;	/* index into upstreams */
	int			 app_auth;	/* egress: CONFIG_APP_AUTH_* */
	int			 verify_client;	/* CONFIG_VERIFY_* */
	char			*client_ca;	/* PEM CA certificates, or NULL */
	int			 client_ca_line;
};

struct config_tls {
	char			*certs[CONFIG_MAX_CERTS];
	char			*keys[CONFIG_MAX_CERTS];
	int			 ncerts, nkeys;
	int			 min_version;	/* TLS1_2_VERSION, ... */
	char			*ciphers;	/* NULL: OpenSSL's default */
	char			*ciphersuites;
};

/* [tls:NAME]: a certificate set chosen by the client's server name. */
struct config_sni {
	char			 name[64];
	int			 line;		/* of its [tls:NAME] */
	char			**names;	/* lower case; "*.b.org" wildcards */
	int			 nnames;
	char			*certs[CONFIG_MAX_CERTS];
	char			*keys[CONFIG_MAX_CERTS];
	int			 ncerts, nkeys;
};

struct config_limits {
	long	per_ip_connections;	/* 0: no limit */
	long	per_ip_rate;		/* connections per minute; 0: off */
	long	max_errors;		/* consecutive 5xx replies; 0: off */
};

struct config_timeouts {
	double	handshake, command, data, backend_connect, drain, proxy_header;
};

struct config {
	char			*file;
	struct config_addr	 backend;
	struct config_addr	 metrics;	/* len 0: no metrics server */
	char			 hostname[256];
	enum config_identity	 client_identity;
	long			 max_connections;
	long			 max_line;
	int			 bare_reject;
	enum config_log		 log_level;
	enum config_log_format	 log_format;
	int			 syslog;	/* to syslog, not stderr */
	long			 workers;	/* threads; 0: one per CPU */
	char			*user;		/* drop to it after start-up */
	char			*group;		/* NULL: the user's group */
	int			 allow_root;	/* may serve as root */
	int			 user_line, group_line;
	struct config_tls	 tls;
	struct config_sni	 sni[CONFIG_MAX_SNI];
	int			 nsni;
	struct config_timeouts	 timeouts;
	struct config_limits	 limits;
	struct config_listener	 listeners[CONFIG_MAX_LISTENERS];
	int			 nlisteners;
	struct config_upstream	 upstreams[CONFIG_MAX_UPSTREAMS];
	int			 nupstreams;

	/* Loading state. */
	int			 lineno;	/* line being read */
	int			 tls_line;
	int			 nerrors;
	char			*errors;	/* "FILE:LINE: ...\n" lines */
	size_t			 errors_len;
};

/* Load and check a file. Returns a config (whose nerrors and errors say what
 * is wrong, if anything) or NULL when out of memory. */
struct config	*config_load(const char *path);
/* The same over a string; name stands for the file in messages. */
struct config	*config_load_string(const char *text, const char *name);
void		 config_free(struct config *c);
/* The address of upstream u on port: returns its length, the address in
 * *ss_r. */
socklen_t	 config_upstream_addr(const struct config_upstream *u, long port,
		    struct sockaddr_storage *ss_r);
/* Whether sa lies in one of the n networks. An IPv4-mapped IPv6 address
 * matches as IPv4. */
int		 config_cidr_match(const struct config_cidr *nets, int n,
		    const struct sockaddr *sa);

#endif
