/*
 * The TLS codec over OpenSSL memory BIOs; see tls.h.
 */
#include "http/tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/file.h"

struct tb__tls_ctx_s {
  SSL_CTX *ssl_ctx;
};

struct tb__tls_s {
  SSL *ssl;
  BIO *in;    /* ciphertext from the peer, read by OpenSSL */
  BIO *out;   /* ciphertext for the peer, written by OpenSSL */
  int done;   /* handshake complete */
  char error[640];
};

/* OpenSSL's queued reason for the last failure, or fallback. */
static void take_openssl_error(char *out, size_t cap, const char *fallback) {
  unsigned long e = ERR_get_error();
  if (e == 0) {
    snprintf(out, cap, "%s", fallback);
    return;
  }
  char buf[200];
  ERR_error_string_n(e, buf, sizeof(buf));
  /* "error:0A000086:SSL routines::certificate verify failed": the text
   * after the last colon is the reason. */
  const char *reason = strrchr(buf, ':');
  snprintf(out, cap, "%s", reason && reason[1] ? reason + 1 : buf);
  ERR_clear_error();
}

static int ctx_new(int server, tb__tls_ctx_t **out, tb_error_t *err) {
  tb__tls_ctx_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return tb_error_set(err, TB_ENOMEM, TB_CATEGORY_NETWORK, "out of memory");
  c->ssl_ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (c->ssl_ctx == NULL) {
    free(c);
    return tb_error_set(err, TB_ETLS, TB_CATEGORY_NETWORK, "cannot create a TLS context");
  }
  SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
  /* Memory BIOs grow as needed: a write is always taken whole. */
  SSL_CTX_set_mode(c->ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
  *out = c;
  return 0;
}

int tb__tls_ctx_client_new(const char *ca_file, int insecure, tb__tls_ctx_t **out,
                           tb_error_t *err) {
  tb__tls_ctx_t *c = NULL;
  int rc = ctx_new(0, &c, err);
  if (rc != 0)
    return rc;
  if (insecure) {
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_NONE, NULL);
  } else {
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file ? SSL_CTX_load_verify_locations(c->ssl_ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(c->ssl_ctx);
    if (ok != 1) {
      char why[256];
      take_openssl_error(why, sizeof(why), "unreadable");
      tb__tls_ctx_free(c);
      return tb_error_set(err, TB_ETLS, TB_CATEGORY_NETWORK, "TLS trust store %s: %s",
                          ca_file ? ca_file : "(system)", why);
    }
  }
  *out = c;
  return 0;
}

int tb__tls_ctx_server_new(const char *cert_file, const char *key_file, tb__tls_ctx_t **out,
                           tb_error_t *err) {
  tb__tls_ctx_t *c = NULL;
  int rc = ctx_new(1, &c, err);
  if (rc != 0)
    return rc;
  /* OpenSSL opens the files itself, blocking: a FIFO or device named here
   * would hang the start, so each must be a regular file first. */
  const char *files[2] = { cert_file, key_file };
  for (int i = 0; i < 2; i++) {
    int fd = tb__open_regular(files[i]);
    if (fd >= 0) {
      close(fd);
      continue;
    }
    tb__tls_ctx_free(c);
    return tb_error_set(err, TB_ETLS, TB_CATEGORY_USER, "TLS %s %s: %s",
                        i ? "key" : "certificate", files[i],
                        fd == TB_EINVAL ? "not a regular file" : strerror(-fd));
  }
  int cert_ok = SSL_CTX_use_certificate_chain_file(c->ssl_ctx, cert_file) == 1;
  int ok = cert_ok && SSL_CTX_use_PrivateKey_file(c->ssl_ctx, key_file, SSL_FILETYPE_PEM) == 1 &&
           SSL_CTX_check_private_key(c->ssl_ctx) == 1;
  if (!ok) {
    char why[256];
    take_openssl_error(why, sizeof(why), "unusable");
    tb__tls_ctx_free(c);
    return tb_error_set(err, TB_ETLS, TB_CATEGORY_USER, "TLS %s %s: %s",
                        cert_ok ? "key" : "certificate", cert_ok ? key_file : cert_file, why);
  }
  *out = c;
  return 0;
}

void tb__tls_ctx_free(tb__tls_ctx_t *ctx) {
  if (ctx == NULL)
    return;
  SSL_CTX_free(ctx->ssl_ctx);
  free(ctx);
}

static int is_ip_literal(const char *host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int tb__tls_new(tb__tls_ctx_t *ctx, int server, const char *host, tb__tls_t **out) {
  tb__tls_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return TB_ENOMEM;
  t->ssl = SSL_new(ctx->ssl_ctx);
  t->in = BIO_new(BIO_s_mem());
  t->out = BIO_new(BIO_s_mem());
  if (t->ssl == NULL || t->in == NULL || t->out == NULL) {
    BIO_free(t->in);
    BIO_free(t->out);
    SSL_free(t->ssl);
    free(t);
    return TB_ENOMEM;
  }
  /* An empty input BIO means "wait for more", not end of stream. */
  BIO_set_mem_eof_return(t->in, -1);
  SSL_set_bio(t->ssl, t->in, t->out);
  if (server) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (host != NULL && host[0] != '\0') {
      int ok;
      if (is_ip_literal(host)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host);
      } else {
        ok = SSL_set_tlsext_host_name(t->ssl, host) == 1 && SSL_set1_host(t->ssl, host) == 1;
      }
      if (!ok) {
        tb__tls_free(t);
        return TB_ENOMEM;
      }
    }
  }
  *out = t;
  return 0;
}

void tb__tls_free(tb__tls_t *tls) {
  if (tls == NULL)
    return;
  SSL_free(tls->ssl); /* frees both BIOs */
  free(tls);
}

/* The failure of an SSL_* call that returned rc. */
static int fail(tb__tls_t *tls, int rc, const char *what) {
  int e = SSL_get_error(tls->ssl, rc);
  if (e == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    return UV_EOF;
  }
  char why[256];
  take_openssl_error(why, sizeof(why), e == SSL_ERROR_SYSCALL ? "unexpected end of stream"
                                                               : "protocol error");
  long v = SSL_get_verify_result(tls->ssl);
  if (v != X509_V_OK)
    snprintf(tls->error, sizeof(tls->error), "%s: %s: %s", what, why,
             X509_verify_cert_error_string(v));
  else
    snprintf(tls->error, sizeof(tls->error), "%s: %s", what, why);
  return TB_ETLS;
}

int tb__tls_handshake(tb__tls_t *tls) {
  if (tls->done)
    return 1;
  int rc = SSL_do_handshake(tls->ssl);
  if (rc == 1) {
    tls->done = 1;
    return 1;
  }
  int e = SSL_get_error(tls->ssl, rc);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return 0;
  return fail(tls, rc, "TLS handshake failed");
}

int tb__tls_feed(tb__tls_t *tls, const char *data, size_t n, tb__buf_t *plain) {
  if (n > 0 && BIO_write(tls->in, data, (int)n) != (int)n)
    return TB_ENOMEM;
  if (!tls->done) {
    int rc = tb__tls_handshake(tls);
    if (rc <= 0)
      return rc;
  }
  for (;;) {
    if (tb__buf_reserve(plain, 16384) != 0)
      return TB_ENOMEM;
    int got = SSL_read(tls->ssl, plain->base + plain->len, 16384);
    if (got > 0) {
      plain->len += (size_t)got;
      continue;
    }
    int e = SSL_get_error(tls->ssl, got);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
      return 0;
    return fail(tls, got, "TLS read failed");
  }
}

int tb__tls_encrypt(tb__tls_t *tls, const uv_buf_t bufs[], unsigned nbufs) {
  for (unsigned i = 0; i < nbufs; i++) {
    size_t off = 0;
    while (off < bufs[i].len) {
      size_t chunk = bufs[i].len - off;
      if (chunk > (1u << 30))
        chunk = 1u << 30;
      int rc = SSL_write(tls->ssl, bufs[i].base + off, (int)chunk);
      if (rc <= 0)
        return fail(tls, rc, "TLS write failed");
      off += (size_t)rc;
    }
  }
  return 0;
}

void tb__tls_close_notify(tb__tls_t *tls) {
  if (tls->done)
    SSL_shutdown(tls->ssl);
  ERR_clear_error();
}

size_t tb__tls_pending(const tb__tls_t *tls) {
  return BIO_ctrl_pending(tls->out);
}

int tb__tls_take_output(tb__tls_t *tls, tb__buf_t *out) {
  size_t n = BIO_ctrl_pending(tls->out);
  if (n == 0)
    return 0;
  if (tb__buf_reserve(out, n) != 0)
    return TB_ENOMEM;
  int got = BIO_read(tls->out, out->base + out->len, (int)n);
  if (got > 0)
    out->len += (size_t)got;
  return 0;
}

const char *tb__tls_error(const tb__tls_t *tls) {
  return tls->error[0] ? tls->error : "TLS failure";
}

int tb__tls_handshake_done(const tb__tls_t *tls) {
  return tls->done;
}
