#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <pthread.h>
#include <string.h>

#include "ticket.h"

struct ticket_key {
	unsigned char	 name[16];	/* in the clear in every ticket */
	unsigned char	 aes[32];	/* AES-256-CBC */
	unsigned char	 hmac[32];	/* HMAC-SHA256 */
};

/* keys[newest] seals; both open. Readers are every worker's handshakes,
 * the writer the control thread every few hours. */
static struct ticket_key keys[2];
static int newest, nkeys;
static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
/* Fetched once: an implicit fetch per handshake costs a provider lookup. */
static EVP_CIPHER *aes;

static int
key_new(struct ticket_key *k)
{
	return (RAND_bytes(k->name, sizeof(k->name)) == 1 &&
	    RAND_priv_bytes(k->aes, sizeof(k->aes)) == 1 &&
	    RAND_priv_bytes(k->hmac, sizeof(k->hmac)) == 1 ? 0 : -1);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void
first_key(void)
{
	if ((aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL)) != NULL)
		ticket_rotate();
}

int
ticket_rotate(void)
{
	struct ticket_key k;

	if (key_new(&k) == -1)
		return (-1);
	pthread_rwlock_wrlock(&lock);
	newest = nkeys == 0 ? 0 : 1 - newest;
	keys[newest] = k;
	if (nkeys < 2)
		nkeys++;
	pthread_rwlock_unlock(&lock);
	OPENSSL_cleanse(&k, sizeof(k));
	return (0);
}

static int
mac_init(EVP_MAC_CTX *hctx, unsigned char *key)
{
	OSSL_PARAM p[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
		    (char *)"SHA256", 0),
		OSSL_PARAM_construct_end()
	};

	return (EVP_MAC_CTX_set_params(hctx, p));
}

/*
 * OpenSSL's ticket callback. Sealing (enc = 1): the newest key, a fresh IV.
 * Opening: the key the ticket names, and 2: a new ticket after every
 * resumption, as OpenSSL's own keys give (with 1, a TLS 1.3 client that
 * uses each ticket once would run out); 0 (unknown key) means a full
 * handshake; -1 an error.
 */
static int
ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	const struct ticket_key *k = NULL;
	int i, r = -1, ivlen = EVP_CIPHER_get_iv_length(aes);

	(void)ssl;
	pthread_rwlock_rdlock(&lock);
	if (enc) {
		k = &keys[newest];
		memcpy(name, k->name, sizeof(k->name));
		if (RAND_bytes(iv, ivlen) == 1 &&
		    EVP_EncryptInit_ex(cctx, aes, NULL, k->aes, iv) == 1 &&
		    mac_init(hctx, (unsigned char *)k->hmac) == 1)
			r = 1;
	} else {
		for (i = 0; i < nkeys; i++)
			if (memcmp(keys[i].name, name, sizeof(keys[i].name)) == 0)
				k = &keys[i];
		if (k == NULL)
			r = 0;
		else if (mac_init(hctx, (unsigned char *)k->hmac) == 1 &&
		    EVP_DecryptInit_ex(cctx, aes, NULL, k->aes, iv) == 1)
			r = 2;
	}
	pthread_rwlock_unlock(&lock);
	return (r);
}

void
ticket_attach(SSL_CTX *ctx)
{
	int ready;

	pthread_once(&once, first_key);
	pthread_rwlock_rdlock(&lock);
	ready = aes != NULL && nkeys > 0;
	pthread_rwlock_unlock(&lock);
	/* Without a key (no randomness, no AES), OpenSSL's own per-context
	 * keys still work, only not across workers' reloads. */
	if (ready)
		SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
}

void
ticket_fini(void)
{
	pthread_rwlock_wrlock(&lock);
	OPENSSL_cleanse(keys, sizeof(keys));
	nkeys = 0;
	pthread_rwlock_unlock(&lock);
	EVP_CIPHER_free(aes);
	aes = NULL;
}
