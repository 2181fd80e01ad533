/*
 * What the TLS tests share: a self-signed certificate (a P-256 key and a
 * certificate for IP 127.0.0.1, written as PEM files to a new directory),
 * the record of one client request's outcome, and an HTTPS client that
 * asks a local server for /api/v1/healthz.
 */
#ifndef TB_TEST_TLS_CERTS_H
#define TB_TEST_TLS_CERTS_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "http/client.h"
#include "http/tls.h"
#include "tb_test.h"

/* The outcome of a request of the project's HTTP client. */
typedef struct {
  int status, calls;
} result_t;

static inline void on_result(tb__http_client_req_t *req, int status) {
  result_t *r = req->data;
  r->status = status;
  r->calls++;
}

/* A client on the loop `on` that trusts the certificate authority in ca_file
 * alone; free *ctx once the client closed. */
static inline void https_client_init(uv_loop_t *on, tb__http_client_t *client,
                                     const char *ca_file, tb__tls_ctx_t **ctx) {
  tb_error_t err = { 0 };
  ASSERT_OK(tb__tls_ctx_client_new(ca_file, 0, ctx, &err));
  tb__http_client_opts_t co = { .tls_transport_new = tb__transport_tls_new, .tls_ctx = *ctx };
  ASSERT_OK(tb__http_client_init(on, client, &co));
}

/* Sends req, GET https://127.0.0.1:server_port/api/v1/healthz, on client with
 * data and cb; url (64 bytes) holds the URL until the answer. */
static inline void https_get_healthz(tb__http_client_t *client, tb__http_client_req_t *req,
                                     char *url, int server_port,
                                     void (*cb)(tb__http_client_req_t *, int), void *data) {
  snprintf(url, 64, "https://127.0.0.1:%d/api/v1/healthz", server_port);
  tb__http_client_req_init(req);
  req->data = data;
  req->method = "GET";
  req->url = (tb_slice_t){ url, strlen(url) };
  ASSERT_OK(tb__http_client_send(client, req, cb));
}

typedef struct {
  char dir[64];
  char cert[96], key[96];
} certs_t;

/* Writes a self-signed certificate for IP 127.0.0.1 and its key. */
static void make_cert(certs_t *c, const char *dir_template, const char *cn) {
  snprintf(c->dir, sizeof(c->dir), "%s", dir_template);
  ASSERT(mkdtemp(c->dir) != NULL);
  snprintf(c->cert, sizeof(c->cert), "%s/cert.pem", c->dir);
  snprintf(c->key, sizeof(c->key), "%s/key.pem", c->dir);
  EVP_PKEY *pkey = EVP_EC_gen("P-256");
  ASSERT(pkey != NULL);
  X509 *x = X509_new();
  ASSERT(x != NULL);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24);
  X509_set_pubkey(x, pkey);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "IP:127.0.0.1");
  ASSERT(ext != NULL);
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  ASSERT(X509_sign(x, pkey, EVP_sha256()) > 0);
  FILE *f = fopen(c->cert, "w");
  ASSERT(f != NULL && PEM_write_X509(f, x) == 1);
  fclose(f);
  f = fopen(c->key, "w");
  ASSERT(f != NULL && PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1);
  fclose(f);
  X509_free(x);
  EVP_PKEY_free(pkey);
}

static void remove_certs(certs_t *c) {
  unlink(c->cert);
  unlink(c->key);
  rmdir(c->dir);
}

#endif /* TB_TEST_TLS_CERTS_H */
