/*
 * TLS over OpenSSL with memory BIOs: the codec both HTTP sides put between
 * their TCP stream and llhttp.  Ciphertext read from the socket is fed in
 * and plaintext comes out; plaintext to send goes in and ciphertext is
 * taken out to write.  OpenSSL never touches a socket, so the loop does all
 * the I/O and nothing blocks.
 *
 * Contexts: a client context verifies the server's certificate against the
 * system's trust store (or a CA file) and its host name or IP address,
 * unless made insecure (tests, self-signed development servers); a server
 * context holds a certificate chain and its key.  A context is shared by
 * every connection made with it and freed by its owner after them.
 */
#ifndef TB_HTTP_TLS_H
#define TB_HTTP_TLS_H

#include <stddef.h>

#include <uv.h>

#include "core/buf.h"
#include "http/transport.h"
#include "tinkerbell/error.h"

typedef struct tb__tls_ctx_s tb__tls_ctx_t;
typedef struct tb__tls_s tb__tls_t;

/* A client context.  ca_file NULL: the system's trust store; insecure:
 * no verification at all.  0, or TB_ETLS / TB_ENOMEM with err saying why. */
int tb__tls_ctx_client_new(const char *ca_file, int insecure, tb__tls_ctx_t **out,
                           tb_error_t *err);
/* A server context from PEM files (the certificate file may hold the
 * chain).  0, or TB_ETLS with err naming the file and OpenSSL's reason. */
int tb__tls_ctx_server_new(const char *cert_file, const char *key_file, tb__tls_ctx_t **out,
                           tb_error_t *err);
void tb__tls_ctx_free(tb__tls_ctx_t *ctx);

/* A connection's codec.  host (client only) is sent as SNI (unless an IP
 * literal) and checked against the certificate. */
int tb__tls_new(tb__tls_ctx_t *ctx, int server, const char *host, tb__tls_t **out);
void tb__tls_free(tb__tls_t *tls);

/* Starts or continues the handshake: 1 when it is complete, 0 when it
 * needs more input (take the output first), TB_ETLS when it failed
 * (tb__tls_error tells why). */
int tb__tls_handshake(tb__tls_t *tls);
/* Feeds n bytes of ciphertext and appends the plaintext they complete to
 * plain (the handshake first runs on, when not complete).  0, UV_EOF after
 * the peer's close_notify, TB_ETLS or TB_ENOMEM. */
int tb__tls_feed(tb__tls_t *tls, const char *data, size_t n, tb__buf_t *plain);
/* Encrypts the buffers (in order) into the pending output.  0, TB_ETLS or
 * TB_ENOMEM.  Only after the handshake. */
int tb__tls_encrypt(tb__tls_t *tls, const uv_buf_t bufs[], unsigned nbufs);
/* Queues a close_notify in the pending output. */
void tb__tls_close_notify(tb__tls_t *tls);
/* Bytes of ciphertext waiting to be written. */
size_t tb__tls_pending(const tb__tls_t *tls);
/* Moves the pending ciphertext to the end of out.  0 or TB_ENOMEM. */
int tb__tls_take_output(tb__tls_t *tls, tb__buf_t *out);
/* Why the last call failed: OpenSSL's reason ("certificate verify failed:
 * self-signed certificate", ...). */
const char *tb__tls_error(const tb__tls_t *tls);
int tb__tls_handshake_done(const tb__tls_t *tls);

/* The TLS client transport (transport.h) over a TCP one, with the
 * signature of tb__http_client_opts_t.tls_transport_new: tls_ctx is a
 * tb__tls_ctx_t.  A failed handshake fails the connect with TB_ETLS. */
int tb__transport_tls_new(uv_loop_t *loop, void *tls_ctx, const char *host,
                          tb__transport_t **out);

#endif /* TB_HTTP_TLS_H */
